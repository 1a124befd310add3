//! Routing keys and topic binding keys as RabbitMQ reads them, without a broker: their length
//! limit, and whether a binding key (a pattern) matches a routing key.
//!
//! Both are split at every `.` into words; empty words count (`a..b` has three words) and the
//! empty key has none. In a binding key, a word that is exactly `*` matches one word and a word
//! that is exactly `#` matches zero or more; `*` or `#` inside a longer word (`a*b`) is a literal
//! character, as RabbitMQ's topic exchange reads it.

/// The most bytes AMQP 0-9-1 allows in a routing key or a binding key (a short string).
pub const MAX_KEY_BYTES: usize = 255;

/// A key too long for AMQP: rejected before any connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{length} bytes: a routing or binding key has at most 255")]
pub struct KeyTooLong {
    pub length: usize,
}

/// Accepts a routing key or a binding key of at most [`MAX_KEY_BYTES`].
pub fn check_length(key: &str) -> Result<(), KeyTooLong> {
    match key.len() {
        length if length > MAX_KEY_BYTES => Err(KeyTooLong { length }),
        _ => Ok(()),
    }
}

/// The words of a key: none for the empty key, otherwise what lies between the dots.
fn words(key: &str) -> Vec<&str> {
    match key {
        "" => Vec::new(),
        key => key.split('.').collect(),
    }
}

/// Whether binding key `pattern` of a topic exchange routes a message published with `key`.
pub fn matches(pattern: &str, key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(key);
    // reachable[j]: the pattern's words so far can match the key's first j words. One pass per
    // pattern word keeps this linear in each, however many `#` there are.
    let mut reachable = vec![false; key.len() + 1];
    reachable[0] = true;
    for word in pattern {
        reachable = match word {
            "#" => {
                let mut next = reachable.clone();
                for j in 1..next.len() {
                    next[j] = next[j] || next[j - 1];
                }
                next
            }
            word => {
                let mut next = vec![false; key.len() + 1];
                for j in 0..key.len() {
                    next[j + 1] = reachable[j] && (word == "*" || word == key[j]);
                }
                next
            }
        };
    }
    reachable[key.len()]
}

/// The words of a binding key with `*` or `#` inside a longer word (`a*b`): RabbitMQ takes
/// them literally, which is seldom what was meant.
pub fn literal_wildcard_words(pattern: &str) -> Vec<&str> {
    words(pattern)
        .into_iter()
        .filter(|word| word.len() > 1 && word.contains(['*', '#']))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked examples of tutorial 5: (key, matched by `*.orange.*`, by `*.*.rabbit` or
    /// `lazy.#`).
    const TUTORIAL: &[(&str, bool, bool)] = &[
        ("quick.orange.rabbit", true, true),
        ("lazy.orange.elephant", true, true),
        ("quick.orange.fox", true, false),
        ("lazy.brown.fox", false, true),
        ("lazy.pink.rabbit", false, true),
        ("quick.brown.fox", false, false),
        ("quick.orange.new.rabbit", false, false),
        ("lazy.orange.new.rabbit", false, true),
    ];

    #[test]
    fn the_tutorials_examples() {
        for &(key, first, second) in TUTORIAL {
            assert_eq!(matches("*.orange.*", key), first, "*.orange.* {key}");
            assert_eq!(
                matches("*.*.rabbit", key) || matches("lazy.#", key),
                second,
                "second queue, {key}"
            );
        }
    }

    #[test]
    fn empty_words_are_words() {
        assert!(matches("a.*.b", "a..b"));
        assert!(!matches("a.*.b", "a.b"));
        assert!(matches("#", ""));
        assert!(!matches("*", ""));
        assert!(matches("*", "a"));
        assert!(!matches("*", "a.b"));
        assert!(matches("*.*", "."));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("a.", "a."));
        assert!(!matches("a.", "a"));
        assert!(matches("a.#", "a"));
        assert!(matches("#.a", "a"));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(!matches("a.#.b", "a.x.y.c"));
        assert!(matches("#.#", ""));
        assert!(!matches("*.#", ""));
        assert!(matches("#.*.#", "x"));
    }

    #[test]
    fn wildcards_inside_words_are_literal() {
        assert!(!matches("a*b", "axb"));
        assert!(matches("a*b", "a*b"));
        assert!(!matches("x#", "x.y"));
        assert_eq!(literal_wildcard_words("a*b.*.#.x#"), ["a*b", "x#"]);
        assert!(literal_wildcard_words("*.orange.#").is_empty());
    }

    #[test]
    fn keys_are_at_most_255_bytes() {
        assert_eq!(check_length(&"a".repeat(255)), Ok(()));
        assert_eq!(
            check_length(&"a".repeat(256)),
            Err(KeyTooLong { length: 256 })
        );
        // Bytes, not characters.
        assert!(check_length(&"é".repeat(128)).is_err());
    }

    #[test]
    fn many_hashes_stay_fast() {
        let pattern = vec!["#"; 100].join(".") + ".x";
        let key = vec!["a"; 120].join(".");
        assert!(!matches(&pattern, &key));
    }
}
