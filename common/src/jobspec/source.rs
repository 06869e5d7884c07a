//! Source locations: maps a field path (`group.web.count`, `constraint[0].operator`) to
//! the 1-based line and column of its key (or table header, or array element) in the
//! TOML text.

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

use super::error::{dedup, Problem, SpecError, SpecErrors};

/// Where every key of one document starts, by field path.
pub(crate) struct SpanIndex<'s> {
    source: &'s str,
    starts: HashMap<String, usize>,
}

impl<'s> SpanIndex<'s> {
    /// Records the start of every key and array element in the document.
    pub fn build(source: &'s str, root: &DeTable<'_>) -> Self {
        let mut index = SpanIndex {
            source,
            starts: HashMap::new(),
        };
        index.walk_table(root, "");
        index
    }

    fn walk_table(&mut self, table: &DeTable<'_>, path: &str) {
        for (key, value) in table.iter() {
            let child = join(path, key.get_ref());
            // The first mention wins: for `[group.web.task.x]` the key `group` points at
            // the first header that names it.
            self.starts.entry(child.clone()).or_insert(key.span().start);
            self.walk_value(value.get_ref(), &child);
        }
    }

    fn walk_value(&mut self, value: &DeValue<'_>, path: &str) {
        match value {
            DeValue::Table(t) => self.walk_table(t, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.starts
                        .entry(child.clone())
                        .or_insert(item.span().start);
                    self.walk_value(item.get_ref(), &child);
                }
            }
            _ => {}
        }
    }

    /// Line and column of `path`, or of its nearest ancestor present in the source
    /// (a missing `driver` is reported at its task's header); `None` for the root.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let mut at = path;
        loop {
            if at.is_empty() {
                return None;
            }
            if let Some(&start) = self.starts.get(at) {
                return Some(line_column(self.source, start));
            }
            at = parent(at);
        }
    }

    /// Places every problem and orders them as they appear in the file (problems with no
    /// place, like a missing `id`, first).
    pub fn locate_all(&self, problems: Vec<Problem>) -> SpecErrors {
        let mut errors: Vec<SpecError> = dedup(problems)
            .into_iter()
            .map(|p| {
                let place = self.locate(&p.path);
                SpecError {
                    line: place.map(|(l, _)| l),
                    column: place.map(|(_, c)| c),
                    path: p.path,
                    message: p.message,
                }
            })
            .collect();
        errors.sort_by_key(|e| (e.line.unwrap_or(0), e.column.unwrap_or(0)));
        SpecErrors(errors)
    }
}

/// `a.b` from `a` and `b`; just `b` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `group.web` for `group.web.count`, `constraint` for `constraint[0]`, `` for `id`.
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    // Spans from the parser sit on character boundaries; stay safe if one does not.
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(src: &str) -> (toml::Spanned<DeTable<'_>>, &str) {
        (DeTable::parse(src).unwrap(), src)
    }

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        // after the two-byte `é`, the `=` is the 4th character of line 2
        let second_equals = src.match_indices('=').nth(1).unwrap().0;
        assert_eq!(line_column(src, second_equals), (2, 4));
    }

    #[test]
    fn line_column_never_panics_off_a_char_boundary() {
        let src = "é";
        assert_eq!(line_column(src, 1), (1, 1));
        assert_eq!(line_column(src, 99), (1, 2));
    }

    #[test]
    fn parent_strips_one_segment_or_index() {
        assert_eq!(parent("group.web.count"), "group.web");
        assert_eq!(parent("constraint[0]"), "constraint");
        assert_eq!(parent("constraint[0].operator"), "constraint[0]");
        assert_eq!(parent("id"), "");
    }

    #[test]
    fn locates_keys_in_headers_inline_tables_and_arrays() {
        let (doc, src) = index(
            "id = \"x\"\n\n[group.web.task.server]\nresources = { cpu = 1, memory = 2 }\n\n[[constraint]]\noperator = \"=\"\n",
        );
        let idx = SpanIndex::build(src, doc.get_ref());
        assert_eq!(idx.locate("id"), Some((1, 1)));
        assert_eq!(idx.locate("group.web.task.server"), Some((3, 17)));
        assert_eq!(
            idx.locate("group.web.task.server.resources.memory"),
            Some((4, 24))
        );
        assert_eq!(idx.locate("constraint[0]"), Some((6, 1)));
        assert_eq!(idx.locate("constraint[0].operator"), Some((7, 1)));
    }

    #[test]
    fn a_missing_field_is_placed_at_its_nearest_ancestor() {
        let (doc, src) = index("id = \"x\"\n[group.web.task.server]\ncount = 1\n");
        let idx = SpanIndex::build(src, doc.get_ref());
        assert_eq!(idx.locate("group.web.task.server.driver"), Some((2, 17)));
        assert_eq!(idx.locate("datacenters"), None);
    }
}
