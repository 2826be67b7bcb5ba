//! SASL authentication, IRCv3 `sasl` 3.1/3.2 (<https://ircv3.net/specs/extensions/sasl-3.1>): the `AUTHENTICATE`
//! exchanges for EXTERNAL (RFC 4422 appendix A: the TLS client certificate, CertFP, is the credential),
//! SCRAM-SHA-256 (RFC 5802, RFC 7677) and PLAIN (RFC 4616).
//!
//! A password login uses SCRAM-SHA-256 when the server's `sasl=` value lists it: the password never crosses the
//! wire, and the server proves it knows the account's key with its signature, which is checked — a wrong one fails
//! the login. PLAIN is used only where SCRAM is not offered.
//!
//! The cryptography (PBKDF2, HMAC-SHA-256, SHA-256, the nonce) is the `sasl` crate's. The messages are built here
//! rather than by its `Scram` client, which draws its nonce where a test cannot fix it (so the RFC 7677 example
//! could not be replayed), does not check that the server's nonce extends ours (RFC 5802 5.1), and does not escape
//! `,` and `=` in the user name.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use sasl::common::{
    Password,
    scram::{ScramProvider as _, Sha256, generate_nonce},
    xor,
};

/// SASL EXTERNAL.
pub(crate) const EXTERNAL: &str = "EXTERNAL";
/// SASL SCRAM-SHA-256.
pub(crate) const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL PLAIN.
pub(crate) const PLAIN: &str = "PLAIN";

/// The longest `AUTHENTICATE` argument; longer payloads are split, and a payload of a multiple of it is followed by
/// `+` so the other side knows it ended.
const CHUNK: usize = 400;
/// The most PBKDF2 iterations a server may ask for: more would let it stall the bridge (RFC 7677 asks for 4096).
const MAX_ITERATIONS: u32 = 1_000_000;
/// The GS2 header of a client without channel binding and without an authorization identity (RFC 5802 7).
const GS2_HEADER: &str = "n,,";

/// Why a SASL login did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SaslError {
    /// The server refused the credentials (904 ERR_SASLFAIL and its kin, or a SCRAM `e=` error).
    #[error("the server refused the login ({0})")]
    Refused(String),
    /// The server's SCRAM signature does not match the password: it does not hold the account's key.
    #[error("the server could not prove it knows the password (its SCRAM-SHA-256 signature is wrong)")]
    BadServerSignature,
    /// The server said the login succeeded without finishing SCRAM (its signature never came).
    #[error("the server reported success without proving it knows the password (no SCRAM-SHA-256 signature)")]
    Unverified,
    /// The server's message is not valid SASL or SCRAM.
    #[error("the server sent an unreadable SASL message ({0})")]
    Protocol(String),
}

fn protocol(error: impl std::fmt::Display) -> SaslError {
    SaslError::Protocol(error.to_string())
}

/// The mechanisms a login can use, best first: EXTERNAL when the connection presents a client certificate, then
/// SCRAM-SHA-256 and PLAIN for a password.
pub(crate) fn mechanisms(has_certificate: bool, has_password: bool) -> Vec<&'static str> {
    let mut mechanisms = Vec::new();
    if has_certificate {
        mechanisms.push(EXTERNAL);
    }
    if has_password {
        mechanisms.extend([SCRAM_SHA_256, PLAIN]);
    }
    mechanisms
}

/// Whether a server that lists no mechanisms (`sasl` without a value) may be assumed to take `mechanism`: EXTERNAL
/// and PLAIN are everywhere SASL is, SCRAM is used only where it is listed.
pub(crate) fn assumed_offered(mechanism: &str) -> bool {
    mechanism != SCRAM_SHA_256
}

/// Where a SCRAM exchange stands.
enum Scram {
    /// Nothing sent yet.
    Start,
    /// client-first sent: its bare part (for the AuthMessage) and its nonce.
    SentFirst { bare: String, nonce: String },
    /// client-final sent: the signature server-final must carry.
    SentFinal { server_signature: Vec<u8> },
    /// server-final's signature checked.
    Verified,
}

/// One login attempt: the mechanism's state, and the server's payload as it arrives in chunks.
pub(crate) struct Exchange {
    mechanism: &'static str,
    account: String,
    password: String,
    scram: Scram,
    /// The server's payload so far (base64, in chunks of [`CHUNK`]).
    incoming: String,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Exchange").field("mechanism", &self.mechanism).finish_non_exhaustive()
    }
}

impl Exchange {
    /// A login to `account` with `password` (unused by EXTERNAL) by `mechanism`.
    pub(crate) fn new(mechanism: &'static str, account: &str, password: &str) -> Self {
        Self {
            mechanism,
            account: account.to_owned(),
            password: password.to_owned(),
            scram: Scram::Start,
            incoming: String::new(),
        }
    }

    /// Answers one `AUTHENTICATE` argument from the server: the arguments to send back (none while a chunked
    /// payload is still arriving). An error ends the login: send `AUTHENTICATE *`.
    pub(crate) fn on_server(&mut self, argument: &str) -> Result<Vec<String>, SaslError> {
        if argument != "+" {
            self.incoming.push_str(argument);
            if argument.len() == CHUNK {
                return Ok(Vec::new());
            }
        }
        let payload = BASE64.decode(std::mem::take(&mut self.incoming)).map_err(protocol)?;
        let answer = match self.mechanism {
            // The identity is the certificate's; an empty authorization identity says "the account it belongs to".
            EXTERNAL => Vec::new(),
            SCRAM_SHA_256 => {
                let nonce = match &self.scram {
                    Scram::Start => generate_nonce().map_err(protocol)?,
                    _ => String::new(),
                };
                self.scram(&payload, &nonce)?
            }
            _ => format!("{0}\0{0}\0{1}", self.account, self.password).into_bytes(),
        };
        Ok(chunks(&answer))
    }

    /// The server said the login succeeded (903): fine unless SCRAM's signature was never checked.
    pub(crate) fn succeeded(&self) -> Result<(), SaslError> {
        match self.mechanism == SCRAM_SHA_256 && !matches!(self.scram, Scram::Verified) {
            true => Err(SaslError::Unverified),
            false => Ok(()),
        }
    }

    /// SCRAM's steps (RFC 5802 5): client-first (with `nonce`) for the empty challenge, client-final for
    /// server-first, and the check of server-final's signature, answered by an empty message.
    fn scram(&mut self, payload: &[u8], nonce: &str) -> Result<Vec<u8>, SaslError> {
        let text = std::str::from_utf8(payload).map_err(protocol)?;
        let field = |name: &str| text.split(',').find_map(|part| part.strip_prefix(name)?.strip_prefix('='));
        if let Some(error) = field("e") {
            return Err(SaslError::Refused(error.to_owned()));
        }
        match std::mem::replace(&mut self.scram, Scram::Start) {
            Scram::Start => {
                let bare = format!("n={},r={nonce}", escape_name(&self.account));
                let first = format!("{GS2_HEADER}{bare}");
                self.scram = Scram::SentFirst { bare, nonce: nonce.to_owned() };
                Ok(first.into_bytes())
            }
            Scram::SentFirst { bare, nonce } => {
                let combined = field("r").filter(|combined| combined.starts_with(&nonce) && *combined != nonce);
                let combined = combined.ok_or_else(|| protocol("the server's nonce does not extend ours"))?;
                let salt = field("s").map(|salt| BASE64.decode(salt)).transpose().map_err(protocol)?;
                let salt = salt.ok_or_else(|| protocol("no salt"))?;
                let iterations: u32 =
                    field("i").and_then(|i| i.parse().ok()).ok_or_else(|| protocol("no iteration count"))?;
                if iterations == 0 || iterations > MAX_ITERATIONS {
                    return Err(protocol(format!("{iterations} iterations")));
                }
                let salted =
                    Sha256::derive(&Password::Plain(self.password.clone()), &salt, iterations).map_err(protocol)?;
                let client_key = Sha256::hmac(b"Client Key", &salted).map_err(protocol)?;
                let server_key = Sha256::hmac(b"Server Key", &salted).map_err(protocol)?;
                let without_proof = format!("c={},r={combined}", BASE64.encode(GS2_HEADER));
                let auth_message = format!("{bare},{text},{without_proof}");
                let client_signature =
                    Sha256::hmac(auth_message.as_bytes(), &Sha256::hash(&client_key)).map_err(protocol)?;
                let proof = BASE64.encode(xor(&client_key, &client_signature));
                let server_signature = Sha256::hmac(auth_message.as_bytes(), &server_key).map_err(protocol)?;
                self.scram = Scram::SentFinal { server_signature };
                Ok(format!("{without_proof},p={proof}").into_bytes())
            }
            Scram::SentFinal { server_signature } => {
                let signature = field("v").map(|v| BASE64.decode(v)).transpose().map_err(protocol)?;
                // Compared in constant time: the expected value must not leak through timing.
                let matches = signature.is_some_and(|signature| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(signature.as_slice(), server_signature.as_slice()))
                });
                if !matches {
                    return Err(SaslError::BadServerSignature);
                }
                self.scram = Scram::Verified;
                Ok(Vec::new())
            }
            Scram::Verified => Err(protocol("the server asked for more than SCRAM has")),
        }
    }
}

/// A SCRAM user name with `=` and `,` escaped (RFC 5802 5.1).
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A payload as `AUTHENTICATE` arguments: base64 in chunks, `+` for an empty one or after a full last chunk.
fn chunks(payload: &[u8]) -> Vec<String> {
    let encoded = BASE64.encode(payload);
    let mut out: Vec<String> =
        encoded.as_bytes().chunks(CHUNK).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect();
    if encoded.len().is_multiple_of(CHUNK) {
        out.push("+".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use sasl::{
        common::{ChannelBinding, Identity},
        secret::Pbkdf2Sha256,
        server::{
            Mechanism as _, Provider, ProviderError, Response, Validator, ValidatorError, mechanisms::Scram as Server,
        },
    };

    use super::*;

    fn encoded(text: &[u8]) -> String {
        BASE64.encode(text)
    }

    fn decoded(arguments: &[String]) -> String {
        let joined: String = arguments.iter().filter(|argument| *argument != "+").cloned().collect();
        String::from_utf8(BASE64.decode(joined).unwrap()).unwrap()
    }

    #[test]
    fn plain_and_external_answer_the_empty_challenge() {
        let mut plain = Exchange::new(PLAIN, "alice", "pw");
        assert_eq!(plain.on_server("+").unwrap(), ["YWxpY2UAYWxpY2UAcHc="]);
        assert_eq!(plain.succeeded(), Ok(()));
        let long = Exchange::new(PLAIN, "a", &"x".repeat(600)).on_server("+").unwrap();
        assert_eq!(long.len(), 3);
        assert_eq!(long[0].len(), CHUNK);
        assert_eq!(chunks(&[b'A'; 300]), [encoded(&[b'A'; 300]), "+".to_owned()]);
        assert_eq!(Exchange::new(EXTERNAL, "alice", "").on_server("+").unwrap(), ["+"]);
    }

    #[test]
    fn password_logins_prefer_scram() {
        assert_eq!(mechanisms(true, true), [EXTERNAL, SCRAM_SHA_256, PLAIN]);
        assert_eq!(mechanisms(false, true), [SCRAM_SHA_256, PLAIN]);
        assert_eq!(mechanisms(true, false), [EXTERNAL]);
        assert!(assumed_offered(PLAIN) && !assumed_offered(SCRAM_SHA_256));
        assert_eq!(escape_name("a=b,c"), "a=3Db=2Cc");
    }

    /// RFC 7677 section 3, message by message.
    #[test]
    fn scram_sha_256_follows_the_rfc_7677_example() {
        let mut exchange = Exchange::new(SCRAM_SHA_256, "user", "pencil");
        let first = exchange.scram(b"", "rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = decoded(&exchange.on_server(&encoded(server_first.as_bytes())).unwrap());
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(exchange.succeeded(), Err(SaslError::Unverified));
        let server_final = encoded(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert_eq!(exchange.on_server(&server_final).unwrap(), ["+"]);
        assert_eq!(exchange.succeeded(), Ok(()));
    }

    /// The RFC 7677 exchange with one bit of the server's signature flipped.
    #[test]
    fn a_wrong_server_signature_fails_the_login() {
        let mut exchange = Exchange::new(SCRAM_SHA_256, "user", "pencil");
        exchange.scram(b"", "rOprNGfwEbeRWgbNEkqO").unwrap();
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        exchange.on_server(&encoded(server_first.as_bytes())).unwrap();
        let forged = encoded(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert_eq!(exchange.on_server(&forged), Err(SaslError::BadServerSignature));
        assert_eq!(exchange.succeeded(), Err(SaslError::Unverified));
    }

    #[test]
    fn a_server_first_message_out_of_bounds_is_refused() {
        for server_first in [
            "r=someone-elses-nonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4000000000",
            "r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",
        ] {
            let mut exchange = Exchange::new(SCRAM_SHA_256, "user", "pencil");
            exchange.scram(b"", "rOprNGfwEbeRWgbNEkqO").unwrap();
            let answer = exchange.on_server(&encoded(server_first.as_bytes()));
            assert!(matches!(answer, Err(SaslError::Protocol(_))), "{server_first}: {answer:?}");
        }
        let mut exchange = Exchange::new(SCRAM_SHA_256, "user", "pencil");
        exchange.scram(b"", "n").unwrap();
        let refused = exchange.on_server(&encoded(b"e=unknown-user"));
        assert_eq!(refused, Err(SaslError::Refused("unknown-user".into())));
    }

    /// An account store holding one key, for the `sasl` crate's SCRAM server.
    struct Account(Pbkdf2Sha256);

    impl Provider<Pbkdf2Sha256> for Account {
        fn provide(&self, _identity: &Identity) -> Result<Pbkdf2Sha256, ProviderError> {
            Ok(self.0.clone())
        }
    }

    impl Validator<Pbkdf2Sha256> for Account {
        fn validate(&self, _identity: &Identity, value: &Pbkdf2Sha256) -> Result<(), ValidatorError> {
            if *value == self.0 { Ok(()) } else { Err(ValidatorError::AuthenticationFailed) }
        }
    }

    /// Logs in with `password` against the crate's SCRAM server, whose account has the password `pencil`.
    fn against_the_crates_server(password: &str) -> Result<(), SaslError> {
        let key = Pbkdf2Sha256::derive("pencil", b"salt of the account", 4096).unwrap();
        // The crate's server takes `n,,` (no channel binding) only when given binding data, which may be empty.
        let mut server = Server::<Sha256, _>::new(Account(key), ChannelBinding::TlsUnique(Vec::new()));
        let mut client = Exchange::new(SCRAM_SHA_256, "user", password);
        let mut to_server = client.on_server("+")?;
        loop {
            match server.respond(decoded(&to_server).as_bytes()) {
                Ok(Response::Proceed(challenge)) => to_server = client.on_server(&encoded(&challenge))?,
                Ok(Response::Success(_, server_final)) => {
                    assert_eq!(client.on_server(&encoded(&server_final))?, ["+"]);
                    return client.succeeded();
                }
                Err(error) => return Err(SaslError::Refused(error.to_string())),
            }
        }
    }

    #[test]
    fn the_crates_scram_server_takes_the_password_and_refuses_another() {
        assert_eq!(against_the_crates_server("pencil"), Ok(()));
        assert_eq!(against_the_crates_server("pen"), Err(SaslError::Refused("authentication failed".into())));
    }
}
