//! Typed reads over the spanned TOML document: each read checks the value's type and
//! records a problem (with the field's path) instead of stopping, and every table reports
//! the keys nobody asked for as unknown fields when it is dropped, so a typo can never be
//! ignored silently.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::error::Problem;
use super::source::join;

/// The problems found while reading; shared by every `Table` of one document.
#[derive(Default)]
pub(crate) struct Problems {
    found: RefCell<Vec<Problem>>,
    guessed: RefCell<Vec<String>>,
}

impl Problems {
    pub fn push(&self, path: &str, message: impl Into<String>) {
        // Single-threaded; no borrow outlives this call.
        self.found.borrow_mut().push(Problem::new(path, message));
    }

    /// The problems found, and the paths of tables read with a guessed placeholder
    /// (rules about those tables themselves would only judge the guess).
    pub fn into_parts(self) -> (Vec<Problem>, Vec<String>) {
        (self.found.into_inner(), self.guessed.into_inner())
    }
}

/// A field rule on a whole number, shared with `rules` (`Err` holds the message).
pub(crate) type IntRule = fn(i64) -> Result<(), String>;

/// One TOML table being read, at a field path.
pub(crate) struct Table<'a, 'i> {
    problems: &'a Problems,
    path: String,
    table: &'a DeTable<'i>,
    asked: Vec<&'static str>,
}

impl Drop for Table<'_, '_> {
    fn drop(&mut self) {
        let mut expected = self.asked.clone();
        expected.sort_unstable();
        expected.dedup();
        for key in self.table.keys() {
            let key = key.get_ref();
            if !self.asked.contains(&key.as_ref()) {
                self.problems.push(
                    &join(&self.path, key),
                    format!(
                        "unknown field `{key}`; expected one of {}",
                        expected.join(", ")
                    ),
                );
            }
        }
    }
}

/// "a string", "an integer", ... for messages.
fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn wrong_type(expected: &str, found: &DeValue<'_>) -> String {
    format!("expected {expected}, found {}", kind(found))
}

fn integer(value: &DeValue<'_>) -> Option<Result<i64, String>> {
    match value {
        DeValue::Integer(i) => Some(
            i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("{i} is too large for a 64-bit integer")),
        ),
        _ => None,
    }
}

/// Keys, numbers, booleans and dates become strings; arrays and tables do not.
fn scalar_string(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => integer(value)
            .and_then(|r| r.ok())
            .map(|n| n.to_string())
            .or_else(|| Some(i.to_string())),
        DeValue::Float(f) => Some(f.as_str().to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Datetime(d) => Some(d.to_string()),
        DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

impl<'a, 'i> Table<'a, 'i> {
    /// The document's top level.
    pub fn root(problems: &'a Problems, table: &'a DeTable<'i>) -> Self {
        Self::at(problems, String::new(), table)
    }

    fn at(problems: &'a Problems, path: String, table: &'a DeTable<'i>) -> Self {
        Table {
            problems,
            path,
            table,
            asked: Vec::new(),
        }
    }

    /// The field path of `key` in this table.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Records a problem at `key` of this table.
    pub fn problem(&self, key: &str, message: impl Into<String>) {
        self.problems.push(&self.path_of(key), message);
    }

    fn value(&mut self, key: &'static str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.asked.push(key);
        self.table.get(key)
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.problem(key, wrong_type("a string", other));
                None
            }
        }
    }

    /// Notes that this table was filled in with a guess for a field that could not be
    /// read, so rules about the table as a whole are not reported.
    pub fn guessed(&self) {
        self.problems.guessed.borrow_mut().push(self.path.clone());
    }

    /// True when `key` is present (whatever its type).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// A string, or a number, boolean or date taken as its text (constraint values).
    pub fn scalar(&mut self, key: &'static str) -> Option<String> {
        let v = self.value(key)?;
        let text = scalar_string(v.get_ref());
        if text.is_none() {
            self.problem(key, wrong_type("a string", v.get_ref()));
        }
        text
    }

    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.problem(key, wrong_type("a boolean (true or false)", other));
                None
            }
        }
    }

    /// A whole number converted to `T`. A value that does not fit `T` (a negative
    /// count) is reported with the field's own rule message and read as not given.
    pub fn int<T: TryFrom<i64>>(&mut self, key: &'static str, rule: IntRule) -> Option<T> {
        let v = self.value(key)?;
        let n = match integer(v.get_ref()) {
            Some(Ok(n)) => n,
            Some(Err(message)) => {
                self.problem(key, message);
                return None;
            }
            None => {
                self.problem(key, wrong_type("an integer", v.get_ref()));
                return None;
            }
        };
        match T::try_from(n) {
            Ok(t) => Some(t),
            Err(_) => {
                let message = rule(n)
                    .err()
                    .unwrap_or_else(|| format!("{n} is out of range"));
                self.problem(key, message);
                None
            }
        }
    }

    /// A duration string such as `"30s"` or `"1h30m"`.
    pub fn duration(&mut self, key: &'static str) -> Option<Duration> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::String(s) => match crate::duration::parse(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem(key, e.to_string());
                    None
                }
            },
            other => {
                self.problem(
                    key,
                    wrong_type("a duration string such as \"30s\" or \"1h30m\"", other),
                );
                None
            }
        }
    }

    /// One of a fixed set of words, e.g. `mode = "fail"`.
    pub fn choice<T: Copy>(&mut self, key: &'static str, options: &[(&str, T)]) -> Option<T> {
        let v = self.value(key)?;
        let words = options
            .iter()
            .map(|(w, _)| *w)
            .collect::<Vec<_>>()
            .join(", ");
        match v.get_ref() {
            DeValue::String(s) => match options.iter().find(|(w, _)| *w == s.as_ref()) {
                Some((_, t)) => Some(*t),
                None => {
                    self.problem(key, format!("unknown value {s:?}; expected one of {words}"));
                    None
                }
            },
            other => {
                self.problem(key, wrong_type(&format!("one of {words}"), other));
                None
            }
        }
    }

    /// An array of strings; each wrong element is reported at `key[i]`.
    pub fn strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::Array(items) => Some(self.string_items(&self.path_of(key), items)),
            other => {
                self.problem(key, wrong_type("an array of strings", other));
                None
            }
        }
    }

    /// The string elements of an array at `path`, reporting the others at `path[i]`.
    fn string_items(&self, path: &str, items: &DeArray<'_>) -> Vec<String> {
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                other => {
                    self.problems
                        .push(&format!("{path}[{i}]"), wrong_type("a string", other));
                    None
                }
            })
            .collect()
    }

    /// A table of free-form keys, each value read by `read` (which reports its own
    /// problems at the path it is given and returns `None` for a value it refuses).
    fn free_table<T>(
        &mut self,
        key: &'static str,
        read: impl Fn(&Self, &str, &DeValue<'_>) -> Option<T>,
    ) -> BTreeMap<String, T> {
        let Some(v) = self.value(key) else {
            return BTreeMap::new();
        };
        let path = self.path_of(key);
        match v.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .filter_map(|(k, item)| {
                    let value = read(self, &join(&path, k.get_ref()), item.get_ref())?;
                    Some((k.get_ref().to_string(), value))
                })
                .collect(),
            other => {
                self.problem(key, wrong_type("a table", other));
                BTreeMap::new()
            }
        }
    }

    /// A table of free-form keys whose values are strings (numbers and booleans are
    /// taken as their text): `env`, `meta`.
    pub fn string_map(&mut self, key: &'static str) -> BTreeMap<String, String> {
        self.free_table(key, |me, path, value| {
            let text = scalar_string(value);
            if text.is_none() {
                me.problems.push(path, wrong_type("a string", value));
            }
            text
        })
    }

    /// A table of free-form keys whose values are arrays of strings (a single string is
    /// taken as a one-element array): check `headers`.
    pub fn string_lists(&mut self, key: &'static str) -> BTreeMap<String, Vec<String>> {
        self.free_table(key, |me, path, value| match value {
            DeValue::String(s) => Some(vec![s.to_string()]),
            DeValue::Array(items) => Some(me.string_items(path, items)),
            other => {
                me.problems
                    .push(path, wrong_type("an array of strings", other));
                None
            }
        })
    }

    /// A free-form table (driver `config`) as JSON values.
    pub fn json_map(&mut self, key: &'static str) -> BTreeMap<String, serde_json::Value> {
        self.free_table(key, |me, path, value| me.json_value(value, path))
    }

    fn json_table(&self, table: &DeTable<'_>, path: &str) -> BTreeMap<String, serde_json::Value> {
        table
            .iter()
            .filter_map(|(k, v)| {
                let child = join(path, k.get_ref());
                self.json_value(v.get_ref(), &child)
                    .map(|j| (k.get_ref().to_string(), j))
            })
            .collect()
    }

    fn json_value(&self, value: &DeValue<'_>, path: &str) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        Some(match value {
            DeValue::String(s) => J::String(s.to_string()),
            DeValue::Integer(_) => match integer(value)? {
                Ok(n) => J::from(n),
                Err(message) => {
                    self.problems.push(path, message);
                    return None;
                }
            },
            DeValue::Float(f) => {
                let n = f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64);
                match n {
                    Some(n) => J::Number(n),
                    None => {
                        self.problems.push(
                            path,
                            format!("{f} cannot be represented (not a finite number)"),
                        );
                        return None;
                    }
                }
            }
            DeValue::Boolean(b) => J::Bool(*b),
            DeValue::Datetime(d) => J::String(d.to_string()),
            DeValue::Array(items) => J::Array(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| self.json_value(e.get_ref(), &format!("{path}[{i}]")))
                    .collect(),
            ),
            DeValue::Table(t) => J::Object(self.json_table(t, path).into_iter().collect()),
        })
    }

    /// `value` as a table at `path`, or a type error there.
    fn child(&self, path: String, value: &'a DeValue<'i>) -> Option<Table<'a, 'i>> {
        match value {
            DeValue::Table(t) => Some(Table::at(self.problems, path, t)),
            other => {
                self.problems.push(&path, wrong_type("a table", other));
                None
            }
        }
    }

    /// A sub-table (`[group.web.restart]` or `restart = { ... }`).
    pub fn table(&mut self, key: &'static str) -> Option<Table<'a, 'i>> {
        let v = self.value(key)?;
        self.child(self.path_of(key), v.get_ref())
    }

    /// An array of tables (`[[constraint]]` or `check = [{ ... }]`), at `key[i]`.
    pub fn tables(&mut self, key: &'static str) -> Vec<Table<'a, 'i>> {
        let Some(v) = self.value(key) else {
            return Vec::new();
        };
        let path = self.path_of(key);
        match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.child(format!("{path}[{i}]"), item.get_ref()))
                .collect(),
            other => {
                self.problem(key, wrong_type("an array of tables", other));
                Vec::new()
            }
        }
    }

    /// A table of named tables (`[group.NAME]`, `[group.G.task.NAME]`), by name.
    pub fn named_tables(&mut self, key: &'static str) -> Vec<(String, Table<'a, 'i>)> {
        let Some(v) = self.value(key) else {
            return Vec::new();
        };
        let path = self.path_of(key);
        match v.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .filter_map(|(name, item)| {
                    let table = self.child(join(&path, name.get_ref()), item.get_ref())?;
                    Some((name.get_ref().to_string(), table))
                })
                .collect(),
            other => {
                self.problem(key, wrong_type("a table", other));
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: i64) -> Result<(), String> {
        Ok(())
    }

    fn non_negative(n: i64) -> Result<(), String> {
        if n < 0 {
            Err("must be >= 0".into())
        } else {
            Ok(())
        }
    }

    fn read<R>(src: &str, f: impl FnOnce(&mut Table<'_, '_>) -> R) -> (R, Vec<Problem>) {
        let doc = DeTable::parse(src).unwrap();
        let problems = Problems::default();
        let out = {
            let mut t = Table::root(&problems, doc.get_ref());
            f(&mut t)
        };
        (out, problems.into_parts().0)
    }

    #[test]
    fn unasked_keys_are_reported_as_unknown_with_the_expected_ones() {
        let (_, problems) = read("cpu = 1\nmemroy = 2\n", |t| {
            t.int::<u64>("memory", any);
            t.int::<u64>("cpu", any);
            t.int::<u64>("memory_max", any);
        });
        assert_eq!(
            problems,
            vec![Problem::new(
                "memroy",
                "unknown field `memroy`; expected one of cpu, memory, memory_max"
            )]
        );
    }

    #[test]
    fn a_wrong_type_names_what_was_expected_and_found() {
        let (v, problems) = read("count = \"3\"\n", |t| t.int::<u32>("count", any));
        assert_eq!(v, None);
        assert_eq!(
            problems,
            vec![Problem::new("count", "expected an integer, found a string")]
        );
    }

    #[test]
    fn a_value_that_does_not_fit_gets_the_rule_message() {
        let (v, problems) = read("count = -1\n", |t| t.int::<u32>("count", non_negative));
        assert_eq!(v, None);
        assert_eq!(problems, vec![Problem::new("count", "must be >= 0")]);
    }

    #[test]
    fn integers_in_other_radixes_are_read() {
        let (v, _) = read("n = 0x10\n", |t| t.int::<u32>("n", any));
        assert_eq!(v, Some(16));
    }

    #[test]
    fn every_bad_array_element_is_reported_at_its_index() {
        let (v, problems) = read("a = [\"x\", 1, true]\n", |t| t.strings("a"));
        assert_eq!(v, Some(vec!["x".to_string()]));
        assert_eq!(
            problems,
            vec![
                Problem::new("a[1]", "expected a string, found an integer"),
                Problem::new("a[2]", "expected a string, found a boolean"),
            ]
        );
    }

    #[test]
    fn bad_durations_and_choices_are_reported() {
        let (_, problems) = read("d = \"5x\"\nm = \"sometimes\"\n", |t| {
            t.duration("d");
            t.choice("m", &[("fail", 1), ("delay", 2)]);
        });
        assert_eq!(problems.len(), 2);
        assert!(problems[0].message.contains("invalid duration"));
        assert_eq!(
            problems[1].message,
            "unknown value \"sometimes\"; expected one of fail, delay"
        );
    }

    #[test]
    fn string_maps_take_scalars_as_text() {
        let (m, problems) = read("env = { A = \"x\", B = 2, C = true, D = [1] }\n", |t| {
            t.string_map("env")
        });
        assert_eq!(m.get("B").map(String::as_str), Some("2"));
        assert_eq!(m.get("C").map(String::as_str), Some("true"));
        assert_eq!(
            problems,
            vec![Problem::new("env.D", "expected a string, found an array")]
        );
    }

    #[test]
    fn json_maps_keep_nested_structure() {
        let (m, problems) = read(
            "config = { command = \"/bin/sh\", args = [\"-c\", \"x\"], n = 1.5, t = { a = 1 } }\n",
            |t| t.json_map("config"),
        );
        assert!(problems.is_empty());
        assert_eq!(m["args"], serde_json::json!(["-c", "x"]));
        assert_eq!(m["n"], serde_json::json!(1.5));
        assert_eq!(m["t"], serde_json::json!({"a": 1}));
    }

    #[test]
    fn nested_tables_report_their_own_unknown_keys_with_full_paths() {
        let (_, problems) = read("[a.b]\nx = 1\ny = 2\n", |t| {
            let mut named = t.named_tables("a");
            let (_, b) = &mut named[0];
            b.int::<u32>("x", any);
        });
        assert_eq!(
            problems,
            vec![Problem::new(
                "a.b.y",
                "unknown field `y`; expected one of x"
            )]
        );
    }
}
