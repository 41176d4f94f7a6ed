//! Viewer tokens (static and signed `rtcam2.<role>.<aud>.<expiry>.<mac>`),
//! offer proofs and token lifetimes (`rtcam token --ttl`). No input may
//! panic, and only a token minted with the secret is ever accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcam_proto::auth::{AuthError, Authorizer, Proof, Role, StaticToken, mint, parse_ttl};

/// The secret the seeds in fuzz/seeds/token were minted with.
const SECRET: &[u8] = b"rtcam-fuzz-secret-0123456789abcdef";
const STATIC: &str = "static-token-for-fuzzing";
/// 2027-01-15: the seeds hold tokens expiring before and after it.
const NOW: u64 = 1_800_000_000;
/// The camera the seeds' tokens are for.
const AUD: &str = "rtcam/fuzz";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_ttl(&text);
    let _ = Role::parse(&text);

    let a = Authorizer::with_tokens(
        vec![StaticToken::new(STATIC, Role::View)],
        Some(SECRET),
        AUD,
        std::time::Duration::from_secs(u64::MAX),
    );
    match a.authorize(Some(&text), NOW) {
        Ok(Role::View) if text == STATIC => {}
        Ok(role) => {
            // Accepted: exactly what `rtcam token` mints, not a variant of it.
            let expiry: u64 = text
                .split('.')
                .nth(3)
                .and_then(|e| e.parse().ok())
                .expect("an accepted signed token has an expiry");
            assert!(NOW < expiry);
            assert_eq!(mint(SECRET, role, AUD, expiry), text);
        }
        Err(AuthError::Expired { expired_at }) => assert!(NOW >= expired_at),
        Err(AuthError::Missing) => assert!(text.is_empty()),
        Err(_) => {}
    }
    // The same bytes as an offer's proof: never accepted unless made with a token.
    if let Ok(proof) = serde_json::from_slice::<Proof>(data)
        && let Ok(g) = a.verify_proof(Some(&proof), "fuzz-client", "sha-256 00", proof.ts)
    {
        panic!("a proof nobody made with a token was accepted: {g:?}");
    }
    assert_eq!(
        Authorizer::open().authorize(Some(&text), NOW),
        Ok(Role::Control)
    );
});
