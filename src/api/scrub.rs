//! `/scrub`: the store's check of everything it holds (see `storage::scrub`). `GET` shows the last
//! completed pass (background or on demand); `POST` runs a pass now, at full speed, and answers with
//! its report once it is done. A report lists what it found; damage is no error of the request.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde_json::json;

use super::error::ApiError;
use super::state::ApiState;

pub async fn handle(state: &ApiState, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    let report = match *req.method() {
        Method::GET | Method::HEAD => state.scrubber.last_report(),
        Method::POST => Some(state.scrubber.check_now().await?),
        _ => return Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "GET, HEAD, POST" }),
    };
    let body = json!({ "store_id": state.store_id, "last": report });
    let mut text = serde_json::to_string_pretty(&body).expect("JSON values serialize");
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
