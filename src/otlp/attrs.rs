//! Атрибуты OTLP: поиск по ключу и перевод `AnyValue` в JSON нагрузки с обрезкой
//! длинных строк.

use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use serde_json::{Map, Value};

/// Значение атрибута `key`, если оно есть и не пустое.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Av> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// Строковое значение (числа и логические — их текст); пустая строка — как отсутствие.
pub fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    let s = match get(attrs, key)? {
        Av::StringValue(s) => s.clone(),
        Av::IntValue(i) => i.to_string(),
        Av::DoubleValue(d) => d.to_string(),
        Av::BoolValue(b) => b.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// Первое непустое строковое значение из ключей по порядку.
pub fn first_text(attrs: &[KeyValue], keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| text(attrs, k))
}

/// Целое значение (целое, целое в строке или целое `double`).
pub fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match get(attrs, key)? {
        Av::IntValue(i) => Some(*i),
        Av::StringValue(s) => s.trim().parse().ok(),
        Av::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
        _ => None,
    }
}

/// Первое целое из ключей по порядку.
pub fn first_int(attrs: &[KeyValue], keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| int(attrs, k))
}

/// Значение атрибута как JSON (с обрезкой строк), если есть.
pub fn json(attrs: &[KeyValue], key: &str, max: usize, truncated: &mut bool) -> Option<Value> {
    get(attrs, key).map(|v| value(v, max, truncated))
}

/// `AnyValue` → JSON. Строки длиннее `max` байт обрезаются по границе символа,
/// и `truncated` становится `true`; байты — base64.
pub fn value(v: &Av, max: usize, truncated: &mut bool) -> Value {
    match v {
        Av::StringValue(s) => Value::String(clip(s, max, truncated)),
        Av::BoolValue(b) => Value::Bool(*b),
        Av::IntValue(i) => Value::from(*i),
        Av::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Av::ArrayValue(a) => Value::Array(a.values.iter().map(|x| any(x, max, truncated)).collect()),
        Av::KvlistValue(kv) => Value::Object(object(&kv.values, max, truncated)),
        Av::BytesValue(b) => {
            use base64::Engine as _;
            Value::String(clip(
                &base64::engine::general_purpose::STANDARD.encode(b),
                max,
                truncated,
            ))
        }
        // Индексы строковой таблицы (профили): в трассах и журналах не встречаются.
        Av::StringValueStrindex(i) => Value::from(*i),
    }
}

fn any(v: &AnyValue, max: usize, truncated: &mut bool) -> Value {
    v.value.as_ref().map_or(Value::Null, |x| value(x, max, truncated))
}

/// Список атрибутов → JSON-объект (пустое значение — `null`).
pub fn object(attrs: &[KeyValue], max: usize, truncated: &mut bool) -> Map<String, Value> {
    attrs
        .iter()
        .map(|kv| {
            let v = kv.value.as_ref().map_or(Value::Null, |x| any(x, max, truncated));
            (kv.key.clone(), v)
        })
        .collect()
}

/// Обрезает строку до `max` байт по границе символа.
pub fn clip(s: &str, max: usize, truncated: &mut bool) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    *truncated = true;
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// JSON-значение аргументов или результата: строка с JSON внутри разбирается,
/// иная строка остаётся строкой.
pub fn parse_embedded(v: Value) -> Value {
    match &v {
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => serde_json::from_str(s).unwrap_or(v),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_char_boundaries_and_flags() {
        let mut t = false;
        assert_eq!(clip("абв", 3, &mut t), "а");
        assert!(t);
        let mut t = false;
        assert_eq!(clip("abc", 3, &mut t), "abc");
        assert!(!t);
    }
}
