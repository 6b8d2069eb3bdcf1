//! Condition nodes: single conditions and AND/OR groups over variable paths.

use serde_json::{Map, Value};

use super::node::{Condition, ConditionNode, Operator};
use super::vars::{as_text, fold_case, lookup, render};

/// Whether the node's conditions hold; an empty group is false (as in the original).
pub fn evaluate(node: &ConditionNode, vars: &Map<String, Value>) -> bool {
    if node.conditions.is_empty() {
        return false;
    }
    let mut results = node.conditions.iter().map(|c| holds(c, vars));
    if node.any {
        results.any(|r| r)
    } else {
        results.all(|r| r)
    }
}

/// One condition: `variable` is a path like in interpolation; the compared value
/// may itself contain `{{...}}`. Equality compares numbers as numbers when both
/// sides parse, else as text; `>`/`<`/`>=`/`<=` hold only when both sides are
/// numbers; `contains` ignores case.
pub fn holds(condition: &Condition, vars: &Map<String, Value>) -> bool {
    let value = lookup(vars, &condition.variable);
    let left = as_text(value);
    let right = render(&condition.value, vars);
    let numbers = || Some((parse_number(&left)?, parse_number(&right)?));
    match condition.op {
        Operator::Eq => match numbers() {
            Some((a, b)) => a == b,
            None => left == right.as_str(),
        },
        Operator::Ne => match numbers() {
            Some((a, b)) => a != b,
            None => left != right.as_str(),
        },
        Operator::Contains => fold_case(&left).contains(&fold_case(&right)),
        Operator::NotContains => !fold_case(&left).contains(&fold_case(&right)),
        Operator::Gt | Operator::Lt | Operator::Ge | Operator::Le => {
            // An order only between numbers: `YES` is neither greater nor less than
            // `18` (comparing the text would make it greater).
            let Some(ordering) = numbers().and_then(|(a, b)| a.partial_cmp(&b)) else {
                return false;
            };
            match condition.op {
                Operator::Gt => ordering.is_gt(),
                Operator::Lt => ordering.is_lt(),
                Operator::Ge => ordering.is_ge(),
                _ => ordering.is_le(),
            }
        }
        Operator::IsEmpty => is_empty(value),
        Operator::IsNotEmpty => !is_empty(value),
    }
}

fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cond(variable: &str, op: &str, value: &str) -> Condition {
        Condition {
            variable: variable.into(),
            op: Operator::parse(op).expect("known operator"),
            value: value.into(),
        }
    }

    fn vars() -> Map<String, Value> {
        json!({"rest_api_1": {"status": 200, "data": [{"city": "Ankara"}]},
               "age": "42", "name": "Ayşe Yılmaz", "city": "İzmir", "empty": "", "list": []})
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn every_operator_and_alias_evaluates() {
        let v = vars();
        let cases = [
            ("rest_api_1.status", "eq", "200", true),
            ("rest_api_1.status", "==", "200.0", true),
            ("rest_api_1.status", "equals", "201", false),
            ("age", "!=", "41", true),
            ("age", "neq", "42", false),
            ("age", "not_equals", "x", true),
            ("name", "contains", "ayşe", true),
            ("city", "contains", "izm", true),
            ("city", "contains", "İZMİR", true),
            ("name", "not_contains", "mehmet", true),
            ("age", ">", "9", true),
            ("age", "gt", "42", false),
            ("age", "greater", "100", false),
            ("age", "<", "100", true),
            ("age", "lt", "4", false),
            ("age", "less", "43", true),
            ("age", ">=", "42", true),
            ("age", "gte", "43", false),
            ("age", "greater_or_equal", "1", true),
            ("age", "<=", "42", true),
            ("age", "lte", "41", false),
            ("age", "less_or_equal", "42", true),
            ("empty", "is_empty", "", true),
            ("list", "is_empty", "", true),
            ("missing", "is_empty", "", true),
            ("name", "is_not_empty", "", true),
            ("rest_api_1.data[0].city", "eq", "Ankara", true),
        ];
        for (variable, op, value, expected) in cases {
            assert_eq!(
                holds(&cond(variable, op, value), &v),
                expected,
                "{variable} {op} {value}"
            );
        }
    }

    #[test]
    fn groups_combine_with_and_or() {
        let v = vars();
        let yes = cond("age", "eq", "42");
        let no = cond("age", "eq", "1");
        let and = ConditionNode {
            conditions: vec![yes.clone(), no.clone()],
            any: false,
        };
        let or = ConditionNode {
            conditions: vec![yes, no],
            any: true,
        };
        assert!(!evaluate(&and, &v));
        assert!(evaluate(&or, &v));
        assert!(!evaluate(
            &ConditionNode {
                conditions: vec![],
                any: true
            },
            &v
        ));
    }

    #[test]
    fn equality_compares_text_when_numbers_do_not_parse() {
        let v = vars();
        assert!(holds(&cond("name", "eq", "Ayşe Yılmaz"), &v));
        assert!(holds(&cond("age", "eq", "{{age}}"), &v));
        assert!(holds(&cond("name", "!=", "42"), &v));
    }

    #[test]
    fn an_order_with_a_non_number_operand_is_false() {
        let v = json!({"answer": "YES", "age": "42", "blank": ""})
            .as_object()
            .cloned()
            .unwrap_or_default();
        for op in [
            ">", "gt", "greater", "<", "lt", "less", ">=", "gte", "<=", "lte",
        ] {
            assert!(!holds(&cond("answer", op, "18"), &v), "YES {op} 18");
            assert!(!holds(&cond("age", op, "abc"), &v), "42 {op} abc");
            assert!(!holds(&cond("blank", op, "0"), &v), "'' {op} 0");
            assert!(!holds(&cond("missing", op, "0"), &v), "missing {op} 0");
        }
        // Both sides numbers: compared as numbers, not as text ("9" > "10" as text).
        assert!(holds(&cond("age", ">", "9"), &v));
        assert!(holds(&cond("age", "<", "100"), &v));
    }
}
