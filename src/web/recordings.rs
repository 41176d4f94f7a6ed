//! `/recordings`: the CCTV recorder's segments over HTTP (list, download
//! with Range, delete), behind the viewer tokens of `[auth]`. The web server
//! knows the recorder only through [`RecordingsDoor`].
//!
//! A token comes in `Authorization: Bearer` (RFC 6750 §2.1) or, since a
//! `<video src>` cannot send headers, in the `access_token` query parameter
//! (§2.3). Listing and downloading need `view`, deleting `control`.

use super::bearer::authorize;
use super::json_error;
use crate::auth::{Authorizer, Role};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower_http::services::ServeFile;

/// One recording segment as the web door lists it.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct RecordingEntry {
    /// Relative name, "YYYY-MM-DD/HH-MM-SS.mp4" (UTC start time), the id used in URLs.
    pub name: String,
    /// Start time, Unix ms.
    pub start_ms: u64,
    /// Length in ms (of what is written so far).
    pub duration_ms: u64,
    /// Video frames in it.
    pub frames: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// True for the segment being written now.
    pub open: bool,
}

/// Why a recordings request failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingsError {
    /// No segment has this name.
    #[error("no recording named {0:?}")]
    NotFound(String),
    /// The name is not one a segment can have.
    #[error("{0:?} is not a recording name (YYYY-MM-DD/HH-MM-SS.mp4 or YYYY-MM-DD/HH-MM-SS-N.mp4)")]
    BadName(String),
    /// The segment is being written (deleting it is refused).
    #[error("{0:?} is being recorded now: it can be deleted once the recorder closes it")]
    InUse(String),
    /// The recordings' storage failed.
    #[error("recordings storage: {0}")]
    Io(String),
}

impl RecordingsError {
    /// The HTTP status and the JSON `error` code of this failure.
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            RecordingsError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            RecordingsError::BadName(_) => (StatusCode::BAD_REQUEST, "bad_name"),
            RecordingsError::InUse(_) => (StatusCode::CONFLICT, "in_use"),
            RecordingsError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "io_error"),
        }
    }
}

impl IntoResponse for RecordingsError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        json_error(status, code, self.to_string())
    }
}

/// What the web server needs from the recorder.
pub trait RecordingsDoor: Send + Sync + 'static {
    /// Every segment, oldest first.
    fn list(&self) -> Vec<RecordingEntry>;
    /// The file of a segment, for download.
    fn path(&self, name: &str) -> Result<PathBuf, RecordingsError>;
    /// Deletes a segment.
    fn delete(&self, name: &str) -> Result<(), RecordingsError>;
    /// Logged motion events (`{"start_ms", "end_ms"?}`), oldest first.
    fn motion(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// The recorder's door and who may use it: the web server's `/recordings`.
#[derive(Clone)]
pub struct Recordings {
    /// The recorder.
    pub door: Arc<dyn RecordingsDoor>,
    /// Decides what each token may do.
    pub auth: Arc<Authorizer>,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings")
            .field("door", &"dyn RecordingsDoor")
            .field("auth", &self.auth)
            .finish()
    }
}

/// Longest recording name: `YYYY-MM-DD/HH-MM-SS-NNN.mp4`.
const MAX_NAME_LEN: usize = 27;
/// A name without its `-N` and `.mp4`; `9` is any digit.
const NAME_SHAPE: &[u8; 19] = b"9999-99-99/99-99-99";

/// Whether `name` is a recording name: `YYYY-MM-DD/HH-MM-SS.mp4` or
/// `YYYY-MM-DD/HH-MM-SS-N.mp4` (N = 1..999 without leading zeros), a real
/// date and time. Nothing else passes (no `..`, separators other than the
/// one `/`, escapes or other characters), so a name can never leave the
/// recordings directory.
pub fn check_name(name: &str) -> Result<(), RecordingsError> {
    if well_formed(name.as_bytes()) {
        Ok(())
    } else {
        // At most 64 characters of it in the message: the name is outside input.
        let shown: String = name.chars().take(64).collect();
        Err(RecordingsError::BadName(shown))
    }
}

/// [`check_name`]'s test, on bytes (so no slicing can split a character).
fn well_formed(name: &[u8]) -> bool {
    if name.len() > MAX_NAME_LEN {
        return false;
    }
    let Some(stem) = name.strip_suffix(b".mp4") else {
        return false;
    };
    let Some((base, counter)) = stem.split_at_checked(NAME_SHAPE.len()) else {
        return false;
    };
    let shaped = base.iter().zip(NAME_SHAPE).all(|(&c, &s)| match s {
        b'9' => c.is_ascii_digit(),
        _ => c == s,
    });
    if !shaped {
        return false;
    }
    let counter_ok = match counter {
        [] => true,
        [b'-', n @ ..] => {
            (1..=3).contains(&n.len()) && n.iter().all(u8::is_ascii_digit) && n[0] != b'0'
        }
        _ => false,
    };
    let num = |from: usize, to: usize| {
        base[from..to]
            .iter()
            .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'))
    };
    counter_ok
        && (1..=12).contains(&num(5, 7))
        && (1..=31).contains(&num(8, 10))
        && num(11, 13) <= 23
        && num(14, 16) <= 59
        && num(17, 19) <= 59
}

/// The `/recordings` routes: the door's, or with `None` (recording off)
/// ones that say so.
pub fn routes(recordings: Option<Recordings>) -> Router {
    let Some(r) = recordings else {
        return Router::new()
            .route("/recordings", any(recording_off))
            .route("/recordings/{day}/{file}", any(recording_off));
    };
    // `get` also answers HEAD, with the method kept (ServeFile then opens
    // no file) and the body dropped.
    Router::new()
        .route(
            "/recordings",
            get(list).fallback(|| async { method_not_allowed("GET, HEAD") }),
        )
        .route(
            "/recordings/{day}/{file}",
            get(download)
                .delete(delete)
                .fallback(|| async { method_not_allowed("GET, HEAD, DELETE") }),
        )
        .with_state(r)
}

async fn recording_off() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "recording_off",
        "recording is off ([record] mode = \"off\")".into(),
    )
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this resource answers {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A door call that panicked (the recorder's bug, answered 500).
#[derive(Debug)]
struct DoorFailed;

impl IntoResponse for DoorFailed {
    fn into_response(self) -> Response {
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the recorder failed this request".into(),
        )
    }
}

/// Runs a door call off the async workers (it may read the disk).
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DoorFailed> {
    tokio::task::spawn_blocking(call).await.map_err(|e| {
        tracing::warn!(error = %e, "the recorder failed a web request");
        DoorFailed
    })
}

/// The checked segment name of a `/recordings/{day}/{file}` request.
fn segment_name(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<String, RecordingsError> {
    let Path((day, file)) =
        path.map_err(|e| RecordingsError::BadName(format!("(unreadable: {e})")))?;
    let name = format!("{day}/{file}");
    check_name(&name)?;
    Ok(name)
}

async fn list(State(r): State<Recordings>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(refused) = authorize(&r.auth, &headers, &uri, Role::View) {
        return refused.into_response();
    }
    let door = r.door.clone();
    match blocking(move || (door.list(), door.motion())).await {
        Ok((entries, motion)) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(serde_json::json!({ "recordings": entries, "motion": motion })),
        )
            .into_response(),
        Err(failed) => failed.into_response(),
    }
}

async fn delete(
    State(r): State<Recordings>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    if let Err(refused) = authorize(&r.auth, &headers, &uri, Role::Control) {
        return refused.into_response();
    }
    let name = match segment_name(path) {
        Ok(n) => n,
        Err(bad) => return bad.into_response(),
    };
    let door = r.door.clone();
    match blocking(move || door.delete(&name)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(failed) => failed.into_response(),
    }
}

/// The request headers `ServeFile` acts on (it needs no others).
const FILE_HEADERS: [HeaderName; 3] = [
    header::RANGE,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

async fn download(
    State(r): State<Recordings>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    if let Err(refused) = authorize(&r.auth, &headers, &uri, Role::View) {
        return refused.into_response();
    }
    let name = match segment_name(path) {
        Ok(n) => n,
        Err(bad) => return bad.into_response(),
    };
    let door = r.door.clone();
    let lookup = name.clone();
    let file = match blocking(move || door.path(&lookup)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return e.into_response(),
        Err(failed) => return failed.into_response(),
    };
    let mut request = Request::new(Body::empty());
    *request.method_mut() = method;
    for h in FILE_HEADERS {
        for v in headers.get_all(&h) {
            request.headers_mut().append(h.clone(), v.clone());
        }
    }
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && !if_range_holds(if_range, &file).await
    {
        // RFC 9110 §13.1.5: the file changed since the client's copy, so
        // it gets the whole file rather than a piece of another version.
        request.headers_mut().remove(header::RANGE);
    }
    match ServeFile::new(&file).try_call(request).await {
        Ok(served) => file_response(&name, served.map(Body::new)),
        Err(e) => {
            tracing::warn!(recording = %name, error = %e, "a recording could not be read");
            RecordingsError::Io(format!("{name} could not be read: {e}")).into_response()
        }
    }
}

/// Whether an `If-Range` lets a Range through: it must be the file's
/// modification time, and that a strong validator (RFC 9110 §8.8.2.2: at
/// least a second old, so no second write hides behind the same date).
/// No ETags are given, so an entity tag never matches.
async fn if_range_holds(if_range: &HeaderValue, file: &std::path::Path) -> bool {
    let Some(date) = if_range
        .to_str()
        .ok()
        .and_then(|t| t.parse::<httpdate::HttpDate>().ok())
    else {
        return false;
    };
    let Ok(modified) = tokio::fs::metadata(file).await.and_then(|m| m.modified()) else {
        return false;
    };
    let settled = SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age >= Duration::from_secs(1));
    settled && httpdate::HttpDate::from(modified) == date
}

/// `ServeFile`'s answer with the MP4 type, or its error as JSON.
fn file_response(name: &str, served: Response) -> Response {
    let status = served.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        let (mut parts, body) = served.into_parts();
        if status.is_success() {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
        }
        // Revalidated each time (the open segment grows); `private` since
        // the URL may carry an access_token (RFC 6750 §2.3).
        parts.headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        // A full GET of the open segment reads the file to its end while
        // Content-Length is its size at open: hyper sends only that many
        // bytes, so the answer stays consistent.
        return Response::from_parts(parts, body);
    }
    let (code, message) = match status {
        StatusCode::RANGE_NOT_SATISFIABLE => (
            "range_not_satisfiable",
            format!("the Range is not one range within {name}"),
        ),
        StatusCode::NOT_FOUND => (
            "not_found",
            RecordingsError::NotFound(name.into()).to_string(),
        ),
        StatusCode::PRECONDITION_FAILED => (
            "precondition_failed",
            format!("{name} was modified since If-Unmodified-Since"),
        ),
        _ => ("io_error", format!("{name} could not be served ({status})")),
    };
    let mut r = json_error(status, code, message);
    for h in [header::CONTENT_RANGE, header::ACCEPT_RANGES] {
        if let Some(v) = served.headers().get(&h) {
            r.headers_mut().insert(h, v.clone());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::StaticToken;
    use std::sync::Mutex;
    use tower::ServiceExt;

    const VIEW: &str = "viewer-token-0001";
    const CONTROL: &str = "control-token-001";
    const CLOSED: &str = "2026-03-01/10-00-00.mp4";
    const SECOND: &str = "2026-03-01/10-05-00-2.mp4";
    const OPEN: &str = "2026-03-01/10-10-00.mp4";
    const SECRET: &[u8] = b"outside the recordings directory";

    /// A recorder over a directory: segments are files, one of them open.
    struct FakeDoor {
        dir: PathBuf,
        open: String,
        names: Mutex<Vec<String>>,
    }

    impl RecordingsDoor for FakeDoor {
        fn list(&self) -> Vec<RecordingEntry> {
            let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
            names
                .into_iter()
                .enumerate()
                .map(|(i, name)| RecordingEntry {
                    bytes: std::fs::metadata(self.dir.join(&name)).map_or(0, |m| m.len()),
                    open: name == self.open,
                    name,
                    start_ms: 1_772_359_200_000 + i as u64 * 300_000,
                    duration_ms: 300_000,
                    frames: 9000,
                })
                .collect()
        }

        fn path(&self, name: &str) -> Result<PathBuf, RecordingsError> {
            check_name(name)?;
            let p = self.dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(RecordingsError::NotFound(name.into()))
            }
        }

        fn delete(&self, name: &str) -> Result<(), RecordingsError> {
            check_name(name)?;
            if name == self.open {
                return Err(RecordingsError::InUse(name.into()));
            }
            std::fs::remove_file(self.dir.join(name)).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => RecordingsError::NotFound(name.into()),
                _ => RecordingsError::Io(e.to_string()),
            })?;
            if let Ok(mut names) = self.names.lock() {
                names.retain(|n| n != name);
            }
            Ok(())
        }
    }

    /// Bytes 0..len, so any range's content is known.
    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        app: Router,
    }

    fn fixture_with(auth: Authorizer) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The recordings live one level down; a secret sits beside them.
        let dir = tmp.path().join("rec");
        std::fs::create_dir_all(dir.join("2026-03-01")).expect("mkdir");
        std::fs::write(tmp.path().join("secret.txt"), SECRET).expect("secret");
        std::fs::write(dir.join("secret.txt"), SECRET).expect("secret");
        for (name, len) in [(CLOSED, 1000), (SECOND, 10), (OPEN, 500)] {
            std::fs::write(dir.join(name), content(len)).expect("segment");
        }
        let door = FakeDoor {
            dir: dir.clone(),
            open: OPEN.into(),
            names: Mutex::new(vec![CLOSED.into(), SECOND.into(), OPEN.into()]),
        };
        let app = routes(Some(Recordings {
            door: Arc::new(door),
            auth: Arc::new(auth),
        }));
        Fixture {
            _tmp: tmp,
            dir,
            app,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(Authorizer::with_tokens(
            vec![
                StaticToken::new(VIEW, Role::View),
                StaticToken::new(CONTROL, Role::Control),
            ],
            None,
            "cam",
            Duration::from_secs(3600),
        ))
    }

    fn request(method: &str, uri: &str, token: Option<&str>) -> axum::http::request::Builder {
        let b = Request::builder().method(method).uri(uri);
        match token {
            Some(t) => b.header(header::AUTHORIZATION, format!("Bearer {t}")),
            None => b,
        }
    }

    async fn send(
        app: &Router,
        req: axum::http::request::Builder,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, parts.headers, bytes.to_vec())
    }

    fn error_code(body: &[u8]) -> String {
        let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON error body");
        assert!(v["message"].is_string(), "{v}");
        v["error"].as_str().expect("error code").to_string()
    }

    fn url(name: &str) -> String {
        format!("/recordings/{name}")
    }

    #[test]
    fn only_recording_names_pass() {
        for good in [
            CLOSED,
            SECOND,
            "1970-01-01/00-00-00.mp4",
            "2026-12-31/23-59-59-999.mp4",
            "2026-02-03/04-05-06-1.mp4",
            "2026-02-03/04-05-06-10.mp4",
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = format!("2026-03-01/10-00-00{}.mp4", "1".repeat(100_000));
        for bad in [
            "",
            "2026-03-01",
            "2026-03-01/",
            "2026-03-01/10-00-00",
            "2026-03-01/10-00-00.MP4",
            "2026-03-01/10-00-00.mp4 ",
            " 2026-03-01/10-00-00.mp4",
            "2026-03-01/10-00-00.mp4.mp4",
            "2026-03-01/10-00-00.mkv",
            "2026-03-01/10-00-00-0.mp4",
            "2026-03-01/10-00-00-01.mp4",
            "2026-03-01/10-00-00-1000.mp4",
            "2026-03-01/10-00-00-.mp4",
            "2026-03-01/10-00-00--1.mp4",
            "2026-03-01/10-00-00-a.mp4",
            "2026-03-01/10-00-00_1.mp4",
            "2026-13-01/10-00-00.mp4",
            "2026-00-01/10-00-00.mp4",
            "2026-03-00/10-00-00.mp4",
            "2026-03-32/10-00-00.mp4",
            "2026-03-01/24-00-00.mp4",
            "2026-03-01/10-60-00.mp4",
            "2026-03-01/10-00-60.mp4",
            "2026-3-01/10-00-00.mp4",
            "2026-03-01/10:00:00.mp4",
            "2026-03-01\\10-00-00.mp4",
            "2026-03-01/../10-00.mp4",
            "../../etc/passwd",
            "../2026-03-01/10-00-00.mp4",
            "2026-03-01/../../x.mp4",
            "/2026-03-01/10-00-00.mp4",
            "/etc/passwd",
            "//etc/00-00-00.mp4",
            "2026-03-01//0-00-00.mp4",
            "%2e%2e/%2e%2e/etc/passwd",
            "2026-03-01%2F10-00-00.mp4",
            "2026-03-01/10-00-00%2emp4",
            "2026-03-01/10-00-00.mp4\0",
            "2026-03-01/10-00-00\0.mp4",
            "2026-03-01/10-00-00.mp4/",
            "2026-03-01/10-00-00.mp4\n",
            "２026-03-01/10-00-00.mp4",
            "2026-03-01/10-00-0٠.mp4",
            "2026-03-01/10-00-00-é.mp4",
            &long,
        ] {
            assert!(
                matches!(check_name(bad), Err(RecordingsError::BadName(_))),
                "{:?}",
                bad.chars().take(40).collect::<String>()
            );
        }
        // The message quotes at most 64 characters of the name.
        let msg = check_name(&long).expect_err("too long").to_string();
        assert!(msg.len() < 200, "{msg}");
    }

    #[tokio::test]
    async fn the_list_is_json_and_not_cached() {
        let f = fixture();
        let (status, headers, body) = send(&f.app, request("GET", "/recordings", Some(VIEW))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let list = v["recordings"].as_array().expect("recordings");
        let names: Vec<&str> = list.iter().filter_map(|e| e["name"].as_str()).collect();
        assert_eq!(names, [CLOSED, SECOND, OPEN]);
        assert_eq!(list[0]["bytes"], 1000);
        assert_eq!(list[0]["open"], false);
        assert_eq!(list[2]["open"], true);
        for field in ["start_ms", "duration_ms", "frames"] {
            assert!(list[0][field].is_u64(), "{field}");
        }
    }

    #[tokio::test]
    async fn a_segment_downloads_whole_or_by_range() {
        let f = fixture();
        let all = content(1000);
        let (status, headers, body) = send(&f.app, request("GET", &url(CLOSED), Some(VIEW))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "video/mp4");
        assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
        assert_eq!(headers[header::CONTENT_LENGTH], "1000");
        assert!(headers.contains_key(header::LAST_MODIFIED));
        assert_eq!(body, all);

        let (status, headers, body) = send(
            &f.app,
            request("GET", &url(CLOSED), Some(VIEW)).header(header::RANGE, "bytes=100-199"),
        )
        .await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(headers[header::CONTENT_RANGE], "bytes 100-199/1000");
        assert_eq!(headers[header::CONTENT_LENGTH], "100");
        assert_eq!(headers[header::CONTENT_TYPE], "video/mp4");
        assert_eq!(body, &all[100..200]);

        // Open-ended and suffix ranges, as a video element seeks.
        let (status, headers, body) = send(
            &f.app,
            request("GET", &url(CLOSED), Some(VIEW)).header(header::RANGE, "bytes=990-"),
        )
        .await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(headers[header::CONTENT_RANGE], "bytes 990-999/1000");
        assert_eq!(body, &all[990..]);
        let (status, _, body) = send(
            &f.app,
            request("GET", &url(CLOSED), Some(VIEW)).header(header::RANGE, "bytes=-5"),
        )
        .await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, &all[995..]);
    }

    #[tokio::test]
    async fn a_range_outside_the_file_is_416() {
        let f = fixture();
        for range in ["bytes=1000-1010", "bytes=5000-"] {
            let (status, headers, body) = send(
                &f.app,
                request("GET", &url(CLOSED), Some(VIEW)).header(header::RANGE, range),
            )
            .await;
            assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(headers[header::CONTENT_RANGE], "bytes */1000");
            assert_eq!(error_code(&body), "range_not_satisfiable");
        }
    }

    #[tokio::test]
    async fn head_gives_the_headers_alone() {
        let f = fixture();
        let (status, headers, body) = send(&f.app, request("HEAD", &url(CLOSED), Some(VIEW))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_LENGTH], "1000");
        assert_eq!(headers[header::CONTENT_TYPE], "video/mp4");
        assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn if_range_with_another_date_sends_the_whole_file() {
        let f = fixture();
        let (status, _, body) = send(
            &f.app,
            request("GET", &url(CLOSED), Some(VIEW))
                .header(header::RANGE, "bytes=0-9")
                .header(header::IF_RANGE, "Fri, 09 Aug 1996 14:21:40 GMT"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 1000);
        // An entity tag never matches: none are given.
        let (status, _, _) = send(
            &f.app,
            request("GET", &url(CLOSED), Some(VIEW))
                .header(header::RANGE, "bytes=0-9")
                .header(header::IF_RANGE, "\"abc\""),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // The file's own date, once it is a second old: the range.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(f.dir.join(CLOSED))
            .and_then(|file| file.set_modified(old))
            .expect("set mtime");
        let (status, _, body) = send(
            &f.app,
            request("GET", &url(CLOSED), Some(VIEW))
                .header(header::RANGE, "bytes=0-9")
                .header(header::IF_RANGE, httpdate::fmt_http_date(old)),
        )
        .await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, &content(1000)[..10]);
    }

    #[tokio::test]
    async fn deleting_needs_control_and_a_closed_segment() {
        let f = fixture();
        let (status, headers, body) =
            send(&f.app, request("DELETE", &url(CLOSED), Some(VIEW))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error_code(&body), "forbidden");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(f.dir.join(CLOSED).exists());

        let (status, _, body) = send(&f.app, request("DELETE", &url(CLOSED), Some(CONTROL))).await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(body.is_empty());
        assert!(!f.dir.join(CLOSED).exists());
        let (status, _, body) = send(&f.app, request("GET", &url(CLOSED), Some(VIEW))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "not_found");
        let (status, _, body) = send(&f.app, request("DELETE", &url(CLOSED), Some(CONTROL))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "not_found");

        let (status, _, body) = send(&f.app, request("DELETE", &url(OPEN), Some(CONTROL))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error_code(&body), "in_use");
        assert!(f.dir.join(OPEN).exists());

        let (status, _, body) = send(
            &f.app,
            request(
                "DELETE",
                "/recordings/2026-03-01/10-00-00.txt",
                Some(CONTROL),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "bad_name");

        // A control token may also watch.
        let (status, _, _) = send(&f.app, request("GET", &url(SECOND), Some(CONTROL))).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn nothing_outside_the_recordings_is_served() {
        let f = fixture();
        for uri in [
            "/recordings/../secret.txt",
            "/recordings/rec/secret.txt",
            "/recordings/%2e%2e/secret.txt",
            "/recordings/..%2F..%2Fsecret.txt/x",
            "/recordings/2026-03-01/..%2Fsecret.txt",
            "/recordings/2026-03-01/..%2F..%2Fsecret.txt",
            "/recordings/2026-03-01/..%5C..%5Csecret.txt",
            "/recordings/%2Fetc/passwd",
            "/recordings/%2F/etc%2Fpasswd",
            "/recordings/2026-03-01/10-00-00.mp4%00",
            "/recordings/2026-03-01/10-00-00.mp4%00.txt",
            "/recordings/2026-03-01/%2e%2e%2f%2e%2e%2fsecret.txt",
            "/recordings/2026-03-01/%ff%fe.mp4",
            "/recordings/..%2F/secret.txt",
            "/recordings/2026-03-01/10-00-00.mp4/../../secret.txt",
            "/recordings/2026-03-01/./10-00-00.mp4",
        ] {
            for method in ["GET", "DELETE"] {
                let (status, _, body) = send(&f.app, request(method, uri, Some(CONTROL))).await;
                assert!(
                    status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                    "{method} {uri}: {status}"
                );
                assert!(
                    !body.windows(SECRET.len()).any(|w| w == SECRET),
                    "{method} {uri} leaked the file"
                );
            }
        }
        assert!(f.dir.join("secret.txt").exists());
        assert!(f.dir.join(CLOSED).exists());
    }

    #[tokio::test]
    async fn a_token_is_required_and_checked() {
        let f = fixture();
        for (method, uri) in [
            ("GET", "/recordings".to_string()),
            ("GET", url(CLOSED)),
            ("DELETE", url(CLOSED)),
        ] {
            let (status, headers, body) = send(&f.app, request(method, &uri, None)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer realm=\"rtcam\"");
            assert_eq!(error_code(&body), "missing_token");
        }
        let (status, headers, body) = send(
            &f.app,
            request("GET", "/recordings", Some("not-a-token-at-all")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let challenge = headers[header::WWW_AUTHENTICATE].to_str().expect("text");
        assert!(
            challenge.starts_with("Bearer realm=\"rtcam\""),
            "{challenge}"
        );
        assert_eq!(error_code(&body), "bad_token");
        // Another scheme is not a bearer token.
        let (status, _, body) = send(
            &f.app,
            Request::builder()
                .uri("/recordings")
                .header(header::AUTHORIZATION, format!("Basic {VIEW}")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&body), "bad_token");
        // The scheme's case does not matter.
        let (status, _, _) = send(
            &f.app,
            Request::builder()
                .uri("/recordings")
                .header(header::AUTHORIZATION, format!("bearer {VIEW}")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(f.dir.join(CLOSED).exists());
    }

    #[tokio::test]
    async fn a_video_element_passes_the_token_in_the_query() {
        let f = fixture();
        let uri = format!("{}?access_token={VIEW}", url(CLOSED));
        let (status, headers, body) = send(
            &f.app,
            request("GET", &uri, None).header(header::RANGE, "bytes=0-3"),
        )
        .await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .expect("text")
                .contains("private")
        );
        assert_eq!(body, &content(1000)[..4]);
        let (status, _, _) = send(
            &f.app,
            request("GET", &format!("/recordings?access_token={VIEW}"), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // Percent-encoded like any query value.
        let (status, _, _) = send(
            &f.app,
            request(
                "GET",
                "/recordings?access_token=viewer%2Dtoken%2D0001",
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = send(
            &f.app,
            request("GET", "/recordings?access_token=wrong-token", None),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&body), "bad_token");
        // A view token in the query cannot delete.
        let uri = format!("{}?access_token={VIEW}", url(SECOND));
        let (status, _, _) = send(&f.app, request("DELETE", &uri, None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // One way at a time (RFC 6750 §2), and once.
        let (status, _, body) = send(
            &f.app,
            request(
                "GET",
                &format!("/recordings?access_token={VIEW}"),
                Some(VIEW),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "invalid_request");
        let (status, _, _) = send(
            &f.app,
            request(
                "GET",
                &format!("/recordings?access_token={VIEW}&access_token={VIEW}"),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn without_auth_anyone_may_do_anything() {
        let f = fixture_with(Authorizer::open());
        let (status, _, _) = send(&f.app, request("GET", "/recordings", None)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = send(&f.app, request("DELETE", &url(SECOND), Some("whatever"))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(!f.dir.join(SECOND).exists());
    }

    #[tokio::test]
    async fn with_recording_off_the_routes_say_so() {
        let app = routes(None);
        for (method, uri) in [
            ("GET", "/recordings"),
            ("GET", CLOSED),
            ("DELETE", CLOSED),
            ("HEAD", CLOSED),
        ] {
            let uri = if uri.starts_with('/') {
                uri.to_string()
            } else {
                url(uri)
            };
            let (status, _, body) = send(&app, request(method, &uri, Some(CONTROL))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
            if method != "HEAD" {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                assert_eq!(
                    v,
                    serde_json::json!({
                        "error": "recording_off",
                        "message": "recording is off ([record] mode = \"off\")"
                    })
                );
            }
        }
    }

    #[tokio::test]
    async fn other_methods_are_405_with_allow() {
        let f = fixture();
        let (status, headers, body) =
            send(&f.app, request("PUT", &url(CLOSED), Some(CONTROL))).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET, HEAD, DELETE");
        assert_eq!(error_code(&body), "method_not_allowed");
        let (status, headers, _) =
            send(&f.app, request("POST", "/recordings", Some(CONTROL))).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET, HEAD");
    }
}
