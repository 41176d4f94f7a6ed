//! The DataChannel control protocol's messages: requests with an id and a
//! command, replies with `ok` and a result or an error code, and events.
//! Parsing is pure and every failure has a stable code.

use serde::Serialize;
use serde_json::{Map, Value};

/// Largest control message accepted.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Stable error codes of the control protocol (documented in `docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlCode {
    /// Not JSON, not an object, or over the size limit.
    BadJson,
    /// No such command.
    UnknownCmd,
    /// Missing or invalid parameters.
    BadParams,
    /// No such pin.
    UnknownPin,
    /// The pin's mode does not support the command.
    WrongMode,
    /// The session's role does not allow the command.
    NotAllowed,
    /// Too many commands.
    RateLimited,
    /// The hardware refused.
    Hardware,
    /// Something failed inside the agent.
    Internal,
    /// `record.*` while `[record] mode` is off.
    RecordingOff,
    /// No such recording.
    NotFound,
    /// The recording is being written.
    InUse,
    /// `audio.talk` while no speaker is configured (`[audio] output`).
    TalkOff,
    /// Another viewer holds the talkback floor.
    FloorTaken,
}

impl ControlCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlCode::BadJson => "bad_json",
            ControlCode::UnknownCmd => "unknown_cmd",
            ControlCode::BadParams => "bad_params",
            ControlCode::UnknownPin => "unknown_pin",
            ControlCode::WrongMode => "wrong_mode",
            ControlCode::NotAllowed => "not_allowed",
            ControlCode::RateLimited => "rate_limited",
            ControlCode::Hardware => "hardware",
            ControlCode::Internal => "internal",
            ControlCode::RecordingOff => "recording_off",
            ControlCode::NotFound => "not_found",
            ControlCode::InUse => "in_use",
            ControlCode::TalkOff => "talk_off",
            ControlCode::FloorTaken => "floor_taken",
        }
    }
}

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ControlError {
    /// Stable code.
    pub code: ControlCode,
    /// What was wrong.
    pub message: String,
}

impl ControlError {
    /// An error with a code and message.
    pub fn new(code: ControlCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A parsed request: its id (echoed in the reply), command and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Any JSON number or string the client chose; `null` when absent.
    pub id: Value,
    /// The command name.
    pub cmd: String,
    /// Every other field.
    pub params: Map<String, Value>,
}

/// Parses a request. On failure, returns the id (if one could be read) with the error.
pub fn parse_request(text: &str) -> Result<Request, (Value, ControlError)> {
    if text.len() > MAX_MESSAGE {
        return Err((
            Value::Null,
            ControlError::new(
                ControlCode::BadJson,
                format!(
                    "message is {} bytes; the limit is {MAX_MESSAGE}",
                    text.len()
                ),
            ),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            ControlError::new(ControlCode::BadJson, format!("invalid JSON: {e}")),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err((
            Value::Null,
            ControlError::new(ControlCode::BadJson, "a request must be a JSON object"),
        ));
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => Value::Null,
        Some(v @ (Value::Number(_) | Value::String(_))) => v,
        Some(_) => {
            return Err((
                Value::Null,
                ControlError::new(ControlCode::BadParams, "id must be a number or a string"),
            ));
        }
    };
    let cmd = match map.remove("cmd") {
        Some(Value::String(c)) if !c.is_empty() => c,
        _ => {
            return Err((
                id,
                ControlError::new(ControlCode::BadParams, "cmd (a string) is required"),
            ));
        }
    };
    Ok(Request {
        id,
        cmd,
        params: map,
    })
}

/// `{"id":…,"ok":true,"result":…}`
pub fn ok_reply(id: &Value, result: Value) -> String {
    serde_json::json!({ "id": id, "ok": true, "result": result }).to_string()
}

/// `{"id":…,"ok":false,"error":{"code":…,"message":…}}`
pub fn error_reply(id: &Value, e: &ControlError) -> String {
    serde_json::json!({ "id": id, "ok": false, "error": { "code": e.code.as_str(), "message": e.message } }).to_string()
}

/// `{"event":…, …fields}`
pub fn event(name: &str, fields: Map<String, Value>) -> String {
    let mut m = fields;
    m.insert("event".into(), Value::String(name.into()));
    Value::Object(m).to_string()
}

/// A parameter accessor with `bad_params` errors naming the field.
pub struct Params<'a>(pub &'a Map<String, Value>);

impl Params<'_> {
    /// A required string.
    pub fn str(&self, name: &str) -> Result<&str, ControlError> {
        self.0.get(name).and_then(Value::as_str).ok_or_else(|| {
            ControlError::new(
                ControlCode::BadParams,
                format!("{name} (a string) is required"),
            )
        })
    }

    /// A required boolean.
    pub fn bool(&self, name: &str) -> Result<bool, ControlError> {
        self.0.get(name).and_then(Value::as_bool).ok_or_else(|| {
            ControlError::new(
                ControlCode::BadParams,
                format!("{name} (true or false) is required"),
            )
        })
    }

    /// An optional number.
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>, ControlError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| {
                    ControlError::new(ControlCode::BadParams, format!("{name} must be a number"))
                }),
        }
    }

    /// A required number.
    pub fn f64(&self, name: &str) -> Result<f64, ControlError> {
        self.opt_f64(name)?.ok_or_else(|| {
            ControlError::new(
                ControlCode::BadParams,
                format!("{name} (a number) is required"),
            )
        })
    }

    /// A required integer.
    pub fn i64(&self, name: &str) -> Result<i64, ControlError> {
        self.0.get(name).and_then(Value::as_i64).ok_or_else(|| {
            ControlError::new(
                ControlCode::BadParams,
                format!("{name} (an integer) is required"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_ids_and_params() {
        let r = parse_request(r#"{"id":7,"cmd":"gpio.set","pin":"relay1","value":true}"#)
            .expect("valid");
        assert_eq!((r.id, r.cmd.as_str()), (Value::from(7), "gpio.set"));
        assert_eq!(Params(&r.params).str("pin"), Ok("relay1"));
        assert_eq!(Params(&r.params).bool("value"), Ok(true));
        let r = parse_request(r#"{"id":"a1","cmd":"ping"}"#).expect("string id");
        assert_eq!(r.id, Value::from("a1"));
        assert_eq!(
            parse_request(r#"{"cmd":"ping"}"#).expect("no id").id,
            Value::Null
        );
    }

    #[test]
    fn bad_requests_get_codes_and_keep_the_id_when_known() {
        let code = |t: &str| parse_request(t).expect_err("bad").1.code;
        assert_eq!(code("nope"), ControlCode::BadJson);
        assert_eq!(code("[1]"), ControlCode::BadJson);
        assert_eq!(code(r#"{"id":{},"cmd":"ping"}"#), ControlCode::BadParams);
        let (id, e) = parse_request(r#"{"id":3}"#).expect_err("no cmd");
        assert_eq!((id, e.code), (Value::from(3), ControlCode::BadParams));
        let big = format!(r#"{{"cmd":"ping","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE));
        assert_eq!(code(&big), ControlCode::BadJson);
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let ok: Value = serde_json::from_str(&ok_reply(
            &Value::from(7),
            serde_json::json!({"pong": true}),
        ))
        .expect("json");
        assert_eq!(
            (ok["id"].as_i64(), ok["ok"].as_bool()),
            (Some(7), Some(true))
        );
        let err: Value = serde_json::from_str(&error_reply(
            &Value::from(7),
            &ControlError::new(ControlCode::UnknownPin, "no pin x"),
        ))
        .expect("json");
        assert_eq!(err["error"]["code"], "unknown_pin");
        let mut f = Map::new();
        f.insert("pin".into(), "door".into());
        let ev: Value = serde_json::from_str(&event("gpio.changed", f)).expect("json");
        assert_eq!(
            (ev["event"].as_str(), ev["pin"].as_str()),
            (Some("gpio.changed"), Some("door"))
        );
    }

    #[test]
    fn params_report_the_field() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"duty":"high","n":1.5}"#).expect("json");
        let p = Params(&m);
        assert!(p.f64("duty").expect_err("string").message.contains("duty"));
        assert!(p.i64("n").is_err());
        assert_eq!(p.opt_f64("missing"), Ok(None));
    }
}
