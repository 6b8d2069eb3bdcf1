//! Interpolation and paths on arbitrary templates, paths and variable trees
//! (`engine/vars.rs`), plus the data sources' JSONPath parameter mapping.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wabot::datasource::model::parse_mapping;
use wabot::engine::vars::{self, Escape};

#[derive(Debug)]
struct Input {
    template: String,
    path: String,
    vars: Map<String, Value>,
    assigned: Value,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let template = if u.arbitrary()? {
            u.arbitrary::<String>()?
        } else {
            let parts = u.int_in_range(0..=6)?;
            (0..parts)
                .map(|_| wabot_fuzz::text(u))
                .collect::<arbitrary::Result<Vec<_>>>()?
                .join("")
        };
        let path = if u.arbitrary()? {
            u.arbitrary::<String>()?
        } else {
            wabot_fuzz::text(u)?
        };
        let vars = match wabot_fuzz::value(u, 5)? {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("rest_api_1".into(), other);
                map
            }
        };
        Ok(Input {
            template,
            path,
            vars,
            assigned: wabot_fuzz::value(u, 3)?,
        })
    }
}

fuzz_target!(|input: Input| {
    let Input {
        template,
        path,
        mut vars,
        assigned,
    } = input;
    let (plain, unknown) = vars::interpolate(&template, &vars, Escape::None);
    // Without `{{` there is nothing to replace.
    if !template.contains("{{") {
        assert_eq!(plain, template);
        assert!(unknown.is_empty());
    }
    let (escaped, _) = vars::interpolate(&template, &vars, Escape::JsonString);
    // JSON-string escaping yields the inside of a valid JSON string whenever the
    // template itself is one.
    let template_ok = serde_json::from_str::<String>(&format!("\"{template}\"")).is_ok();
    if template_ok {
        serde_json::from_str::<String>(&format!("\"{escaped}\""))
            .expect("an escaped interpolation stays a JSON string");
    }
    let _ = vars::render(&template, &vars);
    let _ = vars::render_value(&Value::String(template.clone()), &vars);
    let _ = vars::render_value(&Value::Object(vars.clone()), &vars);

    let segments = vars::parse_path(&path);
    let found = vars::lookup(&vars, &path).cloned();
    if segments.is_none() {
        assert!(found.is_none(), "a malformed path found a value");
    }
    let root = Value::Object(vars.clone());
    let _ = vars::lookup_in(&root, &path);
    let _ = vars::display(&root);
    let _ = vars::as_text(found.as_ref());
    let _ = vars::fold_case(&template);

    // A flat key spelled like the path wins over the nested value (older
    // executors stored such keys), so only a path without one reads back.
    let flat = vars.contains_key(path.trim());
    vars::assign(&mut vars, &path, assigned.clone());
    // A path of keys only reads back what was assigned there.
    let keys_only =
        segments.is_some_and(|s| s.iter().all(|seg| matches!(seg, vars::Segment::Key(_))));
    if keys_only && !flat {
        assert_eq!(
            vars::lookup(&vars, &path),
            Some(&assigned),
            "assign then lookup of {path:?}"
        );
    }

    let mut mapping = Map::new();
    mapping.insert("p".into(), Value::String(path.clone()));
    if let Ok(params) = parse_mapping("fuzz", &mapping) {
        for p in params {
            if let Some(jp) = &p.path {
                let _ = jp.query(&root).all();
            }
        }
    }
});
