//! etcd's simple tokens: `<16 random letters>.<log index>`, assigned on
//! every member when the Authenticate entry at that index is applied, valid
//! for the TTL (`--auth-token-ttl`, 300 s by default) since their last use,
//! forgotten when their user is deleted or changes password and when auth
//! is disabled. Deadlines are on the member's own clock.

use std::collections::HashMap;
use std::time::Duration;

/// Letters of the random part (etcd's `letters`).
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const PREFIX_LEN: usize = 16;

/// A fresh random token prefix (etcd's `GenTokenPrefix`); `None` without
/// an entropy source (a token nobody can guess cannot be made).
pub fn new_prefix() -> Option<String> {
    let mut raw = [0u8; PREFIX_LEN];
    getrandom::fill(&mut raw).ok()?;
    Some(
        raw.iter()
            .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
            .collect(),
    )
}

/// The log index a simple token names, if it has the simple form.
pub fn token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.len() != PREFIX_LEN {
        return None;
    }
    index.parse().ok()
}

#[derive(Debug)]
pub struct SimpleTokens {
    ttl: Duration,
    tokens: HashMap<String, (String, Duration)>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            tokens: HashMap::new(),
        }
    }

    /// Assigns `prefix.index` to `user`; returns the token.
    pub fn assign(&mut self, prefix: &str, index: u64, user: &str, now: Duration) -> String {
        self.tokens.retain(|_, (_, deadline)| *deadline > now);
        let token = format!("{prefix}.{index}");
        self.tokens
            .insert(token.clone(), (user.to_string(), now + self.ttl));
        token
    }

    /// The user of a live token, whose TTL starts again.
    pub fn user(&mut self, token: &str, now: Duration) -> Option<String> {
        let (user, deadline) = self.tokens.get_mut(token)?;
        if *deadline <= now {
            self.tokens.remove(token);
            return None;
        }
        *deadline = now + self.ttl;
        Some(user.clone())
    }

    pub fn invalidate_user(&mut self, user: &str) {
        self.tokens.retain(|_, (u, _)| u != user);
    }

    pub fn clear(&mut self) {
        self.tokens.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_for_its_ttl_since_last_use() {
        let mut t = SimpleTokens::new(Duration::from_secs(10));
        let tok = t.assign(
            &new_prefix().expect("entropy"),
            7,
            "u",
            Duration::from_secs(0),
        );
        assert_eq!(token_index(&tok), Some(7));
        assert_eq!(t.user(&tok, Duration::from_secs(9)).as_deref(), Some("u"));
        assert_eq!(t.user(&tok, Duration::from_secs(18)).as_deref(), Some("u"));
        assert_eq!(t.user(&tok, Duration::from_secs(28)), None);
        assert_eq!(t.user(&tok, Duration::from_secs(1)), None);
    }

    #[test]
    fn invalidation_forgets_a_users_tokens_only() {
        let mut t = SimpleTokens::new(Duration::from_secs(10));
        let a = t.assign(&new_prefix().expect("entropy"), 1, "a", Duration::ZERO);
        let b = t.assign(&new_prefix().expect("entropy"), 2, "b", Duration::ZERO);
        t.invalidate_user("a");
        assert_eq!(t.user(&a, Duration::ZERO), None);
        assert_eq!(t.user(&b, Duration::ZERO).as_deref(), Some("b"));
        t.clear();
        assert_eq!(t.user(&b, Duration::ZERO), None);
    }

    #[test]
    fn prefixes_are_letters_and_differ() {
        let a = new_prefix().expect("entropy");
        assert_eq!(a.len(), PREFIX_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphabetic()));
        assert_ne!(Some(a.clone()), new_prefix());
        assert_eq!(token_index("short.1"), None);
        assert_eq!(token_index(&format!("{a}.x")), None);
    }
}
