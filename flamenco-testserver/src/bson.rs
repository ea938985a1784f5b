//! Just enough BSON to answer `Accept: application/bson` as the Server does: ObjectIds and
//! datetimes keep their BSON types, everything else maps from JSON.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A value to encode.
pub enum Bson {
    Json(Value),
    ObjectId(String),
    DateTime(DateTime<Utc>),
    Array(Vec<Bson>),
    Document(Vec<(String, Bson)>),
}

/// Encode a document.
pub fn encode_document(fields: &[(String, Bson)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in fields {
        encode_element(&mut body, key, value);
    }
    finish(body)
}

fn finish(mut body: Vec<u8>) -> Vec<u8> {
    body.push(0);
    let len = (body.len() + 4) as i32;
    let mut out = len.to_le_bytes().to_vec();
    out.extend(body);
    out
}

fn cstring(out: &mut Vec<u8>, s: &str) {
    out.extend(s.as_bytes().iter().filter(|b| **b != 0));
    out.push(0);
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend(((s.len() + 1) as i32).to_le_bytes());
    out.extend(s.as_bytes());
    out.push(0);
}

fn encode_element(out: &mut Vec<u8>, key: &str, value: &Bson) {
    match value {
        Bson::ObjectId(hex_id) => {
            out.push(0x07);
            cstring(out, key);
            let mut bytes = [0u8; 12];
            let _ = hex::decode_to_slice(hex_id, &mut bytes);
            out.extend(bytes);
        }
        Bson::DateTime(t) => {
            out.push(0x09);
            cstring(out, key);
            out.extend(t.timestamp_millis().to_le_bytes());
        }
        Bson::Array(items) => {
            out.push(0x04);
            cstring(out, key);
            let fields: Vec<(String, &Bson)> = items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect();
            let mut body = Vec::new();
            for (k, v) in fields {
                encode_element(&mut body, &k, v);
            }
            out.extend(finish(body));
        }
        Bson::Document(fields) => {
            out.push(0x03);
            cstring(out, key);
            out.extend(encode_document(fields));
        }
        Bson::Json(v) => encode_json(out, key, v),
    }
}

fn encode_json(out: &mut Vec<u8>, key: &str, value: &Value) {
    match value {
        Value::Null => {
            out.push(0x0A);
            cstring(out, key);
        }
        Value::Bool(b) => {
            out.push(0x08);
            cstring(out, key);
            out.push(u8::from(*b));
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if let Ok(i) = i32::try_from(i) {
                    out.push(0x10);
                    cstring(out, key);
                    out.extend(i.to_le_bytes());
                } else {
                    out.push(0x12);
                    cstring(out, key);
                    out.extend(i.to_le_bytes());
                }
            } else {
                out.push(0x01);
                cstring(out, key);
                out.extend(n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(0x02);
            cstring(out, key);
            string(out, s);
        }
        Value::Array(items) => {
            let items: Vec<Bson> = items.iter().cloned().map(Bson::Json).collect();
            encode_element(out, key, &Bson::Array(items));
        }
        Value::Object(map) => {
            let fields: Vec<(String, Bson)> = map
                .iter()
                .map(|(k, v)| (k.clone(), Bson::Json(v.clone())))
                .collect();
            encode_element(out, key, &Bson::Document(fields));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_small_document() {
        let doc = vec![
            ("a".to_string(), Bson::Json(Value::from(1))),
            (
                "id".to_string(),
                Bson::ObjectId("0102030405060708090a0b0c".into()),
            ),
        ];
        let bytes = encode_document(&doc);
        assert_eq!(
            i32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(bytes[4], 0x10);
        assert_eq!(*bytes.last().unwrap(), 0);
        assert!(bytes
            .windows(12)
            .any(|w| w == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
    }
}
