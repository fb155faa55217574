//! The output cap: a probe result larger than the cap (bytes of compact JSON) is
//! cut until it fits — the biggest list loses entries from its far end, else the
//! biggest string is shortened — so the answer stays valid JSON of the same shape.

use serde_json::Value;

use super::Keep;

/// Marks a shortened string, so a reader sees it was cut.
const CUT_MARK: &str = "…";

/// Cut `value` until it serializes to at most `max` bytes; true when anything was
/// cut. A value that still cannot fit (nothing left to cut) becomes `null`.
pub fn fit(value: &mut Value, max: usize, keep: Keep) -> bool {
    let mut size = encoded_len(value);
    if size <= max {
        return false;
    }
    // Each round removes at least one list entry or a share of one string: bounded.
    for _ in 0..10_000 {
        let excess = size - max;
        if !cut_largest(value, excess, keep) {
            break;
        }
        size = encoded_len(value);
        if size <= max {
            return true;
        }
    }
    *value = Value::Null;
    true
}

fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// The path to the node (list with entries, or string) weighing the most, by its
/// encoded size.
fn largest(value: &Value) -> Option<(usize, Vec<Step>)> {
    let own = match value {
        Value::Array(items) if !items.is_empty() => Some((encoded_len(value), Vec::new())),
        Value::String(s) if s.len() > CUT_MARK.len() => Some((encoded_len(value), Vec::new())),
        _ => None,
    };
    let children: Box<dyn Iterator<Item = (Step, &Value)>> = match value {
        Value::Array(items) => Box::new(items.iter().enumerate().map(|(i, v)| (Step::Index(i), v))),
        Value::Object(map) => Box::new(map.iter().map(|(k, v)| (Step::Key(k.clone()), v))),
        _ => Box::new(std::iter::empty()),
    };
    let mut best = own;
    for (step, child) in children {
        if let Some((size, mut path)) = largest(child) {
            // A list is preferred over a string inside it only when it is bigger;
            // equal sizes keep the outer list, whose entries go whole.
            if best.as_ref().is_none_or(|(b, _)| size > *b) {
                path.insert(0, step.clone());
                best = Some((size, path));
            }
        }
    }
    best
}

#[derive(Debug, Clone)]
enum Step {
    Index(usize),
    Key(String),
}

fn node<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    let child = match (value, first) {
        (Value::Array(items), Step::Index(i)) => items.get_mut(*i)?,
        (Value::Object(map), Step::Key(k)) => map.get_mut(k)?,
        _ => return None,
    };
    node(child, rest)
}

/// Shrink the largest node by about `excess` bytes; false when nothing can shrink.
fn cut_largest(value: &mut Value, excess: usize, keep: Keep) -> bool {
    let Some((size, path)) = largest(value) else {
        return false;
    };
    let Some(target) = node(value, &path) else {
        return false;
    };
    match target {
        Value::Array(items) => {
            // Drop the share of entries the excess represents (at least one).
            // Rounded up, so as few entries as possible go (rounding down
            // overshoots and can empty the list).
            let per_item = size.div_ceil(items.len().max(1)).max(1);
            let drop = excess.div_ceil(per_item).clamp(1, items.len());
            match keep {
                Keep::Head => items.truncate(items.len() - drop),
                Keep::Tail => {
                    items.drain(..drop);
                }
            }
            true
        }
        Value::String(s) => {
            let target_len = s.len().saturating_sub(excess + CUT_MARK.len());
            let mut end = target_len;
            while end > 0 && !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str(CUT_MARK);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_values_are_untouched() {
        let mut v = json!({"a": [1, 2, 3]});
        assert!(!fit(&mut v, 100, Keep::Head));
        assert_eq!(v, json!({"a": [1, 2, 3]}));
    }

    #[test]
    fn lists_lose_their_far_end() {
        let rows: Vec<_> = (0..1000).map(|i| json!({"n": i})).collect();
        let mut head = json!({"total": 1000, "rows": rows.clone()});
        assert!(fit(&mut head, 500, Keep::Head));
        assert!(encoded_len(&head) <= 500);
        assert_eq!(head["total"], 1000);
        assert_eq!(head["rows"][0]["n"], 0);

        let mut tail = json!({"lines": rows});
        assert!(fit(&mut tail, 500, Keep::Tail));
        let lines = tail["lines"].as_array().unwrap();
        assert_eq!(lines.last().unwrap()["n"], 999);
    }

    #[test]
    fn long_strings_are_shortened_on_a_char_boundary() {
        let mut v = json!({"text": "é".repeat(1000)});
        assert!(fit(&mut v, 300, Keep::Head));
        assert!(encoded_len(&v) <= 300);
        assert!(v["text"].as_str().unwrap().ends_with(CUT_MARK));
    }

    #[test]
    fn what_cannot_fit_becomes_null() {
        let mut v = json!({"a_long_key_name_that_stays": 12345});
        assert!(fit(&mut v, 5, Keep::Head));
        assert_eq!(v, Value::Null);
    }
}
