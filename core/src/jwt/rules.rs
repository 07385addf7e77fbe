//! The claim rules a signed token must also pass: `exp` required, bounded and in the future,
//! `nbf`/`iat` not in the future (with [`LEEWAY_SECS`] for clock skew), a lifetime no longer than
//! [`Rules::max_lifetime_secs`], and `aud`/`iss` when the gateway is configured with them.
//!
//! Sans-io: the caller passes the current time.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use serde::Deserialize;
use serde_json::Number;

use super::JwtError;

/// Seconds of clock skew allowed to `nbf` and `iat`: an issuer whose clock runs up to a minute
/// ahead of ours still gets its fresh tokens accepted. `exp` gets none: a token is refused from
/// its `exp` second on, the same instant a session holding it is closed.
pub const LEEWAY_SECS: u64 = 60;

/// Default of [`Rules::max_lifetime_secs`]: 24 hours, a working day plus margin, and the
/// lifetime the load generator's tokens have.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// The latest time claim accepted: 9999-12-31T23:59:59Z. Anything later (`1e300`, `u64::MAX`) is
/// not a date but a way to say "never expires", and is refused as [`JwtError::AbsurdTime`].
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// What a token's claims are checked against, besides the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Longest lifetime accepted, in seconds, measured twice: `exp - now` (what is left; catches
    /// a far `exp` in any token) and, when the token has an `iat`, `exp - iat` (what the issuer
    /// granted; catches a year-long token even in its last hour).
    pub max_lifetime_secs: u64,
    /// When set, the token's `aud` (a string, or an array of strings) must contain it.
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal it.
    pub issuer: Option<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
            audience: None,
            issuer: None,
        }
    }
}

/// `aud`: one audience, or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(aud) => aud == wanted,
            Audience::Many(auds) => auds.iter().any(|aud| aud == wanted),
        }
    }
}

/// The registered claims a token carries that the rules look at, as decoded.
#[derive(Debug, Default)]
pub(super) struct TimeAndParties {
    pub exp: Option<Number>,
    pub nbf: Option<Number>,
    pub iat: Option<Number>,
    pub aud: Option<Audience>,
    pub iss: Option<String>,
}

impl Rules {
    /// Checks the claims at `now` and returns `exp` in whole seconds (rounded up).
    pub(super) fn check(&self, claims: &TimeAndParties, now: u64) -> Result<u64, JwtError> {
        let exp = claims.exp.as_ref().ok_or(JwtError::MissingClaim("exp"))?;
        let exp = numeric_date(exp, "exp")?;
        if exp <= now {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = &claims.nbf {
            if numeric_date(nbf, "nbf")? > now.saturating_add(LEEWAY_SECS) {
                return Err(JwtError::NotYetValid);
            }
        }
        let max = self.max_lifetime_secs;
        if exp - now > max {
            return Err(JwtError::LifetimeTooLong { max_secs: max });
        }
        if let Some(iat) = &claims.iat {
            let iat = numeric_date(iat, "iat")?;
            if iat > now.saturating_add(LEEWAY_SECS) {
                return Err(JwtError::IssuedInFuture);
            }
            if exp.saturating_sub(iat) > max {
                return Err(JwtError::LifetimeTooLong { max_secs: max });
            }
        }
        if let Some(wanted) = &self.audience {
            let aud = claims.aud.as_ref().ok_or(JwtError::MissingClaim("aud"))?;
            if !aud.contains(wanted) {
                return Err(JwtError::WrongAudience);
            }
        }
        if let Some(wanted) = &self.issuer {
            let iss = claims.iss.as_ref().ok_or(JwtError::MissingClaim("iss"))?;
            if iss != wanted {
                return Err(JwtError::WrongIssuer);
            }
        }
        Ok(exp)
    }
}

/// A time claim in whole unix seconds: fractions rounded up, negatives as 0, later than
/// [`MAX_NUMERIC_DATE`] refused.
fn numeric_date(n: &Number, claim: &'static str) -> Result<u64, JwtError> {
    let secs = match n.as_u64() {
        Some(secs) => secs,
        None => match n.as_f64() {
            // Negative (as_i64) or fractional; the bound check below runs before any cast.
            Some(f) if f <= 0.0 => 0,
            Some(f) if f <= MAX_NUMERIC_DATE as f64 => f.ceil() as u64,
            _ => return Err(JwtError::AbsurdTime(claim)),
        },
    };
    if secs > MAX_NUMERIC_DATE {
        return Err(JwtError::AbsurdTime(claim));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;

    fn num(v: &str) -> Option<Number> {
        Some(serde_json::from_str(v).expect("a JSON number"))
    }

    fn exp_in(secs: u64) -> TimeAndParties {
        TimeAndParties {
            exp: num(&(NOW + secs).to_string()),
            ..TimeAndParties::default()
        }
    }

    #[test]
    fn exp_is_required_and_strict() {
        let rules = Rules::default();
        let none = TimeAndParties::default();
        assert_eq!(rules.check(&none, NOW), Err(JwtError::MissingClaim("exp")));
        assert_eq!(rules.check(&exp_in(1), NOW), Ok(NOW + 1));
        assert_eq!(rules.check(&exp_in(0), NOW), Err(JwtError::Expired));
        let past = TimeAndParties {
            exp: num("-5"),
            ..TimeAndParties::default()
        };
        assert_eq!(rules.check(&past, NOW), Err(JwtError::Expired));
        let fractional = TimeAndParties {
            exp: num("1700000000.5"),
            ..TimeAndParties::default()
        };
        assert_eq!(rules.check(&fractional, NOW), Ok(NOW + 1));
    }

    #[test]
    fn absurd_times_are_refused_not_saturated() {
        let rules = Rules {
            max_lifetime_secs: u64::MAX,
            ..Rules::default()
        };
        for v in [
            "1e300",
            "1.7976931348623157e308",
            "18446744073709551615",
            "253402300800",
        ] {
            for claim in ["exp", "nbf", "iat"] {
                let mut c = exp_in(60);
                let slot = match claim {
                    "exp" => &mut c.exp,
                    "nbf" => &mut c.nbf,
                    _ => &mut c.iat,
                };
                *slot = num(v);
                assert_eq!(
                    rules.check(&c, NOW),
                    Err(JwtError::AbsurdTime(claim)),
                    "{claim}={v}"
                );
            }
        }
        let last = TimeAndParties {
            exp: num(&MAX_NUMERIC_DATE.to_string()),
            ..TimeAndParties::default()
        };
        assert_eq!(rules.check(&last, NOW), Ok(MAX_NUMERIC_DATE));
    }

    #[test]
    fn lifetime_is_bounded_from_now_and_from_iat() {
        let rules = Rules {
            max_lifetime_secs: 3600,
            ..Rules::default()
        };
        assert_eq!(rules.check(&exp_in(3600), NOW), Ok(NOW + 3600));
        let too_long = Err(JwtError::LifetimeTooLong { max_secs: 3600 });
        assert_eq!(rules.check(&exp_in(3601), NOW), too_long);
        // Issued two hours ago for three hours: one left, but the lifetime is too long.
        let old = TimeAndParties {
            iat: num(&(NOW - 7200).to_string()),
            ..exp_in(3600)
        };
        assert_eq!(rules.check(&old, NOW), too_long);
        let fresh = TimeAndParties {
            iat: num(&(NOW - 10).to_string()),
            ..exp_in(3500)
        };
        assert_eq!(rules.check(&fresh, NOW), Ok(NOW + 3500));
    }

    #[test]
    fn nbf_and_iat_have_a_leeway() {
        let rules = Rules::default();
        for (claim, error) in [
            ("nbf", JwtError::NotYetValid),
            ("iat", JwtError::IssuedInFuture),
        ] {
            for (offset, ok) in [(0, true), (LEEWAY_SECS, true), (LEEWAY_SECS + 1, false)] {
                let mut c = exp_in(600);
                let at = num(&(NOW + offset).to_string());
                if claim == "nbf" {
                    c.nbf = at;
                } else {
                    c.iat = at;
                }
                let expected = if ok { Ok(NOW + 600) } else { Err(error) };
                assert_eq!(rules.check(&c, NOW), expected, "{claim} at now+{offset}");
            }
        }
    }

    #[test]
    fn audience_and_issuer_when_configured() {
        let rules = Rules {
            audience: Some("chat".into()),
            issuer: Some("https://id.example".into()),
            ..Rules::default()
        };
        let with = |aud: Option<Audience>, iss: Option<&str>| TimeAndParties {
            aud,
            iss: iss.map(str::to_owned),
            ..exp_in(60)
        };
        let iss = Some("https://id.example");
        let one = |a: &str| Some(Audience::One(a.to_owned()));
        let many = |a: &[&str]| Some(Audience::Many(a.iter().map(|s| s.to_string()).collect()));
        assert_eq!(rules.check(&with(one("chat"), iss), NOW), Ok(NOW + 60));
        assert_eq!(
            rules.check(&with(many(&["x", "chat"]), iss), NOW),
            Ok(NOW + 60)
        );
        assert_eq!(
            rules.check(&with(one("other"), iss), NOW),
            Err(JwtError::WrongAudience)
        );
        assert_eq!(
            rules.check(&with(many(&[]), iss), NOW),
            Err(JwtError::WrongAudience)
        );
        assert_eq!(
            rules.check(&with(None, iss), NOW),
            Err(JwtError::MissingClaim("aud"))
        );
        assert_eq!(
            rules.check(&with(one("chat"), Some("https://evil")), NOW),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            rules.check(&with(one("chat"), None), NOW),
            Err(JwtError::MissingClaim("iss"))
        );
        // Unconfigured, both are ignored.
        let open = Rules::default();
        assert_eq!(
            open.check(&with(one("any"), Some("any")), NOW),
            Ok(NOW + 60)
        );
    }

    proptest! {
        #[test]
        fn accepted_tokens_obey_every_rule(
            exp in any::<i64>(), iat in proptest::option::of(any::<u32>()),
            nbf in proptest::option::of(any::<u32>()), max in 1..100_000u64, now in any::<u32>(),
        ) {
            let now = u64::from(now);
            let c = TimeAndParties {
                exp: num(&exp.to_string()),
                iat: iat.and_then(|v| num(&v.to_string())),
                nbf: nbf.and_then(|v| num(&v.to_string())),
                ..TimeAndParties::default()
            };
            let rules = Rules { max_lifetime_secs: max, ..Rules::default() };
            if let Ok(exp) = rules.check(&c, now) {
                prop_assert!(exp > now && exp - now <= max);
                if let Some(iat) = iat {
                    prop_assert!(u64::from(iat) <= now + LEEWAY_SECS);
                    prop_assert!(exp.saturating_sub(u64::from(iat)) <= max);
                }
                if let Some(nbf) = nbf {
                    prop_assert!(u64::from(nbf) <= now + LEEWAY_SECS);
                }
            }
        }

        #[test]
        fn any_float_exp_is_checked_without_panic(exp in any::<f64>(), now in any::<u64>()) {
            let c = TimeAndParties {
                exp: Number::from_f64(exp),
                ..TimeAndParties::default()
            };
            if let Ok(secs) = Rules::default().check(&c, now) {
                prop_assert!(secs > now && secs <= MAX_NUMERIC_DATE);
            }
        }
    }
}
