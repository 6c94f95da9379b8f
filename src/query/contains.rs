//! Семантика `jsonb @>` в памяти. Та же семантика компилируется в SQL для SQLite
//! (`storage::sql`), а на PostgreSQL используется сам оператор `@>`.

use serde_json::Value;

/// Содержит ли `doc` образец `pattern` по правилам `jsonb @>` PostgreSQL:
/// объект содержит объект, если каждый ключ образца есть в документе и его значение
/// содержит значение образца; массив содержит массив, если каждый элемент образца
/// содержится в каком-нибудь элементе документа; скаляры равны (числа — численно).
pub fn json_contains(doc: &Value, pattern: &Value) -> bool {
    match (doc, pattern) {
        (Value::Object(d), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| d.get(k).is_some_and(|dv| json_contains(dv, pv))),
        (Value::Array(d), Value::Array(p)) => p.iter().all(|pv| d.iter().any(|dv| json_contains(dv, pv))),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn follows_jsonb_containment_rules() {
        let doc = json!({"a": 1, "b": {"c": [1, 2, {"d": "x"}]}, "e": null, "f": 1.5});
        assert!(json_contains(&doc, &json!({})));
        assert!(json_contains(&doc, &json!({"a": 1})));
        assert!(json_contains(&doc, &json!({"a": 1.0})));
        assert!(json_contains(&doc, &json!({"b": {"c": [2]}})));
        assert!(json_contains(&doc, &json!({"b": {"c": [{"d": "x"}, 1]}})));
        assert!(json_contains(&doc, &json!({"b": {"c": []}})));
        assert!(json_contains(&doc, &json!({"e": null, "f": 1.5})));
        assert!(!json_contains(&doc, &json!({"a": "1"})));
        assert!(!json_contains(&doc, &json!({"b": {"c": [3]}})));
        assert!(!json_contains(&doc, &json!({"b": {"c": 1}})));
        assert!(!json_contains(&doc, &json!({"z": null})));
        assert!(!json_contains(&doc, &json!({"b": []})));
    }
}
