//! Reading a JSON object field by field, so that every error names the exact
//! field (`suggestions[3].confidence_score`) and the rule it broke, wrong
//! types included — serde's own messages name neither in a stable form.

use serde_json::{Map, Value};
use switchboard_platform::problem::Invalid;

pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// `value` must be an object with no fields outside `known`. `prefix`
    /// is prepended to field names (`""`, `"suggestions[0]."`); `whole` names
    /// the value itself when it is not an object.
    pub fn object(
        value: &'a Value,
        prefix: &str,
        whole: &str,
        known: &[&str],
    ) -> Result<Self, Invalid> {
        let Some(obj) = value.as_object() else {
            let name = if whole.is_empty() { "body" } else { whole };
            return Err(Invalid::new(name, "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Invalid::new(
                format!("{prefix}{unknown}"),
                format!("is not a known field (known: {})", known.join(", ")),
            ));
        }
        Ok(Self {
            obj,
            prefix: prefix.to_owned(),
        })
    }

    pub fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// The field's value; JSON `null` counts as absent.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    pub fn invalid(&self, field: &str, rule: impl Into<String>) -> Invalid {
        Invalid::new(self.name(field), rule)
    }

    pub fn required(&self, field: &str, rule: &str) -> Result<&'a Value, Invalid> {
        self.get(field)
            .ok_or_else(|| self.invalid(field, format!("is required: {rule}")))
    }

    pub fn str(&self, field: &str, rule: &str) -> Result<&'a str, Invalid> {
        self.required(field, rule)?
            .as_str()
            .ok_or_else(|| self.invalid(field, rule))
    }

    pub fn opt_str(&self, field: &str, rule: &str) -> Result<Option<&'a str>, Invalid> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.invalid(field, rule)),
        }
    }

    pub fn f64(&self, field: &str, rule: &str) -> Result<f64, Invalid> {
        self.required(field, rule)?
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| self.invalid(field, rule))
    }

    pub fn opt_u64(&self, field: &str, rule: &str) -> Result<Option<u64>, Invalid> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.invalid(field, rule)),
        }
    }

    pub fn array(&self, field: &str, rule: &str) -> Result<&'a Vec<Value>, Invalid> {
        self.required(field, rule)?
            .as_array()
            .ok_or_else(|| self.invalid(field, rule))
    }
}

/// A trimmed-free text rule: `min..=max` characters, no control characters.
pub fn text(
    f: &Fields<'_>,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    rule: &str,
) -> Result<(), Invalid> {
    let n = value.chars().count();
    if n < min || n > max || (min > 0 && value.trim().is_empty()) {
        return Err(f.invalid(field, rule));
    }
    Ok(())
}
