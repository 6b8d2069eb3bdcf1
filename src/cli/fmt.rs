//! Text for a person to read: counts with the right form of their noun, and tables
//! whose columns line up whatever the cells hold.

use std::fmt::Display;

/// `1 warning`, `0 warnings`, `3 warnings`: `noun` is the singular, and the plural
/// adds an `s` (every noun these commands count does).
pub fn count(n: impl Display, noun: &str) -> String {
    let n = n.to_string();
    let s = if n == "1" { "" } else { "s" };
    format!("{n} {noun}{s}")
}

/// How a column's cells sit in their width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// For numbers, so that their digits line up.
    Right,
}

/// A table printed with every column as wide as its widest cell. Widths are counted
/// in characters, not bytes, so `Ayşe` or `≠` take the room they take on screen
/// (wide characters, as in CJK text, still take two columns there: rare enough in
/// these tables not to pull in a Unicode width table).
#[derive(Debug, Clone)]
pub struct Table {
    indent: String,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`, one column per heading.
    pub fn new(indent: &str, header: &[(&str, Align)]) -> Table {
        Table {
            indent: indent.to_owned(),
            align: header.iter().map(|(_, a)| *a).collect(),
            rows: vec![header.iter().map(|(h, _)| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped. A line break or
    /// tab in a cell (an error message may hold one) becomes a space: it would
    /// break the row.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells
            .into_iter()
            .map(|c| c.replace(['\n', '\r', '\t'], " "))
            .collect();
        cells.resize(self.align.len(), String::new());
        self.rows.push(cells);
    }

    /// The lines, each ending in a newline, with two spaces between columns and
    /// none after the last cell.
    pub fn render(&self) -> String {
        let width = |cell: &String| cell.chars().count();
        let widths: Vec<usize> = (0..self.align.len())
            .map(|c| self.rows.iter().map(|r| width(&r[c])).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = self.indent.clone();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[c] - width(cell));
                match self.align[c] {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1usize, "warning"), "1 warning");
        assert_eq!(count(0usize, "warning"), "0 warnings");
        assert_eq!(count(2i64, "active conversation"), "2 active conversations");
        assert_eq!(count(11, "error"), "11 errors");
    }

    #[test]
    fn columns_line_up_by_characters_and_numbers_to_the_right() {
        let mut t = Table::new(
            "  ",
            &[
                ("kind", Align::Left),
                ("n", Align::Right),
                ("example", Align::Left),
            ],
        );
        t.row(vec!["send_retrying".into(), "7".into(), "Ayşe ≠ x".into()]);
        t.row(vec!["ü".into(), "1234".into(), String::new()]);
        t.row(vec![
            "x".into(),
            "0".into(),
            "two\nlines".into(),
            "extra".into(),
        ]);
        assert_eq!(
            t.render(),
            "  kind              n  example\n\
             \x20 send_retrying     7  Ayşe ≠ x\n\
             \x20 ü              1234\n\
             \x20 x                 0  two lines\n"
        );
    }
}
