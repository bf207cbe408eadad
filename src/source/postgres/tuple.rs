//! TupleData of pgoutput Insert, Update and Delete messages.
//!
//! Owns: validating a tuple once when its message is parsed (so iterating it cannot fail)
//! and the cell kinds `n` null, `u` unchanged TOAST (absent, never NULL), `t` text, `b`
//! binary. Does not own the messages around it (`pgoutput.rs`).

use super::pgoutput::{PgOutputError, Reader};

/// One cell of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Null,
    /// An unchanged TOASTed value that was not sent: absent, not NULL.
    Unchanged,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// TupleData: validated when parsed, iterated without errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple<'a> {
    ncols: usize,
    /// The column entries (after the column count).
    data: &'a [u8],
}

impl<'a> Tuple<'a> {
    pub(super) fn parse(r: &mut Reader<'a>) -> Result<Tuple<'a>, PgOutputError> {
        let n = r.i16()?;
        if n < 0 {
            return Err(PgOutputError::Negative {
                message: r.message,
                what: "column count",
                value: n.into(),
            });
        }
        let start = r.position();
        for _ in 0..n {
            match r.u8()? {
                b'n' | b'u' => {}
                b't' | b'b' => {
                    let len = r.i32()?;
                    let len = usize::try_from(len).map_err(|_| PgOutputError::Negative {
                        message: r.message,
                        what: "value length",
                        value: len.into(),
                    })?;
                    r.bytes(len)?;
                }
                other => return Err(r.unexpected(other, "a column kind n, u, t or b")),
            }
        }
        let data = r.buf.get(start..r.position()).unwrap_or(&[]);
        Ok(Tuple {
            ncols: n as usize,
            data,
        })
    }

    pub fn len(&self) -> usize {
        self.ncols
    }

    pub fn is_empty(&self) -> bool {
        self.ncols == 0
    }

    pub fn cells(&self) -> Cells<'a> {
        Cells {
            data: self.data,
            pos: 0,
            left: self.ncols,
        }
    }
}

/// Iterator over the cells of a validated tuple.
#[derive(Debug, Clone)]
pub struct Cells<'a> {
    data: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Iterator for Cells<'a> {
    type Item = Cell<'a>;
    fn next(&mut self) -> Option<Cell<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let kind = *self.data.get(self.pos)?;
        self.pos += 1;
        match kind {
            b'n' => Some(Cell::Null),
            b'u' => Some(Cell::Unchanged),
            _ => {
                let len_bytes: [u8; 4] = self.data.get(self.pos..self.pos + 4)?.try_into().ok()?;
                let len = i32::from_be_bytes(len_bytes) as usize;
                self.pos += 4;
                let v = self.data.get(self.pos..self.pos + len)?;
                self.pos += len;
                Some(if kind == b't' {
                    Cell::Text(v)
                } else {
                    Cell::Binary(v)
                })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Which old image an Update or Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: only the replica identity columns hold values; the others are sent as NULL and
    /// mean "absent".
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}
