//! Magic-link tokens: 256 random bits, shown to the user once, stored only as a SHA-256
//! hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use url::Url;

use crate::protocol::http::AUTH_VERIFY_PATH;

/// A freshly made token and the hash to store.
pub struct NewToken {
    pub token: String,
    pub hash: [u8; 32],
}

/// Makes a token from the operating system's random source.
pub fn new_token() -> Result<NewToken, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    Ok(NewToken { token, hash })
}

/// The hash under which a token is stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A short, non-secret name for a token's hash, for idempotency keys.
pub fn hash_label(hash: &[u8; 32]) -> String {
    hash[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The link users click: `<public url>/auth/verify?token=...`.
pub fn magic_link(public_url: &Url, token: &str) -> String {
    let mut url = public_url.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}{AUTH_VERIFY_PATH}"));
    url.query_pairs_mut().clear().append_pair("token", token);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::text::token_from_paste;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.token.len(), 43);
        assert_ne!(a.token, b.token);
        assert_eq!(a.hash, hash_token(&a.token));
    }

    #[test]
    fn links_carry_the_token_under_the_public_url() {
        let url = Url::parse("https://chat.example.com/roomz/").unwrap();
        let link = magic_link(&url, "abc-_1");
        assert_eq!(link, "https://chat.example.com/roomz/auth/verify?token=abc-_1");
        assert_eq!(token_from_paste(&link), Some("abc-_1"));
    }
}
