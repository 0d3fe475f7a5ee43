//! Request bodies, strictly: `application/json` only (415 otherwise), a JSON object where an
//! object is expected (a JSON array in field order is refused, although serde would take it for
//! a struct), a malformed or truncated body is 400, an oversized one 413.

use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::HeaderMap;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::{ApiError, BODY_READ_TIMEOUT};

/// Reads a whole body of at most `bytes_max` within [`BODY_READ_TIMEOUT`].
pub async fn read(headers: &HeaderMap, body: Incoming, bytes_max: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(hyper::header::CONTENT_LENGTH).and_then(|value| value.to_str().ok());
    if let Some(declared) = declared.and_then(|text| text.parse::<u64>().ok())
        && declared > bytes_max as u64
    {
        return Err(ApiError::body_too_large(bytes_max));
    }
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, bytes_max).collect())
        .await
        .map_err(|_| ApiError::request_timeout(BODY_READ_TIMEOUT))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::body_too_large(bytes_max)),
        Err(error) => Err(ApiError::bad_request(format!("malformed or truncated request body: {error}"))),
    }
}

/// The `Content-Type` header of `headers`, if it is text.
pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(hyper::header::CONTENT_TYPE).and_then(|value| value.to_str().ok())
}

/// Decodes a JSON object body into `T`: 415 unless `content_type` is `application/json` (with
/// or without parameters such as `charset=utf-8`), 400 unless `bytes` is one JSON object that
/// `T` takes.
pub fn decode<T: DeserializeOwned>(content_type: Option<&str>, bytes: &[u8]) -> Result<T, ApiError> {
    let media_type = content_type.map(|value| value.split(';').next().unwrap_or_default().trim());
    if !media_type.is_some_and(|media_type| media_type.eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

/// For `#[serde(deserialize_with = …)]` on a list of structs: every element must be a JSON object
/// (serde's derive would take an array in field order for a struct too). Each element is
/// decoded straight from the body, without an intermediate `serde_json::Value`.
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    let objects = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(objects.into_iter().map(|Object(value)| value).collect())
}

/// A `T` that only a map (a JSON object) decodes into.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for OnlyMaps<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(OnlyMaps(std::marker::PhantomData)).map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        a: i64,
        b: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        #[serde(deserialize_with = "objects")]
        items: Vec<Pair>,
    }

    // Proves only `application/json` objects decode: other media types are 415, arrays in field
    // order and malformed JSON are 400, at the top and inside lists.
    #[test]
    fn only_json_objects_decode() {
        let json = Some("application/json");
        assert_eq!(decode::<Pair>(json, br#"{"a":1,"b":"x"}"#).unwrap(), Pair { a: 1, b: "x".into() });
        assert!(decode::<Pair>(Some("Application/JSON; charset=utf-8"), br#" {"a":1,"b":"x"}"#).is_ok());
        for media_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            assert_eq!(decode::<Pair>(media_type, br#"{"a":1,"b":"x"}"#).unwrap_err().status, 415, "{media_type:?}");
        }
        for body in [&br#"[1,"x"]"#[..], b"", b"{", br#"{"a":1}"#, b"null", br#"{"a":1,"b":"x"} x"#] {
            assert_eq!(decode::<Pair>(json, body).unwrap_err().status, 400, "{}", String::from_utf8_lossy(body));
        }
        let batch = decode::<Batch>(json, br#"{"items":[{"a":1,"b":"x"}]}"#).unwrap();
        assert_eq!(batch.items, [Pair { a: 1, b: "x".into() }]);
        assert_eq!(decode::<Batch>(json, br#"{"items":[[1,"x"]]}"#).unwrap_err().status, 400);
    }
}
