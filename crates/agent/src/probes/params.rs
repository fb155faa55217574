//! Probe parameters: each probe declares what it takes ([`ParamSpec`]), and a run's
//! parameters are checked against that before the probe starts ([`Params`]).
//!
//! Invariant: a probe body only ever sees names it declared, values of the declared
//! kind, and defaults filled in; anything else was refused with a one-line reason.
//! Values reach commands as single arguments (never through a shell), and a unit
//! name cannot start with `-`, so none can be taken for an option.

use std::collections::BTreeMap;

use muster_proto::ProbeParam;

/// What values a parameter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A systemd unit name: `[A-Za-z0-9@._:-]{1,200}`, not starting with `-`.
    Unit,
    /// A whole number in `min..=max`.
    Number { min: u64, max: u64 },
    /// One of these words.
    Choice(&'static [&'static str]),
}

/// One parameter a probe declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    pub default: Option<&'static str>,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub fn info(&self) -> ProbeParam {
        ProbeParam {
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            required: self.required,
            default: self.default.map(str::to_owned),
        }
    }

    fn check(&self, value: &str) -> Result<(), String> {
        let name = self.name;
        match self.kind {
            ParamKind::Unit => {
                let allowed = |c: char| c.is_ascii_alphanumeric() || "@._:-".contains(c);
                if value.is_empty() || value.len() > 200 {
                    Err(format!(
                        "parameter {name}: a unit name has 1 to 200 characters"
                    ))
                } else if value.starts_with('-') {
                    Err(format!(
                        "parameter {name}: a unit name cannot start with '-'"
                    ))
                } else if !value.chars().all(allowed) {
                    Err(format!(
                        "parameter {name}: a unit name has only letters, digits and @._:-"
                    ))
                } else {
                    Ok(())
                }
            }
            ParamKind::Number { min, max } => match value.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(()),
                _ => Err(format!(
                    "parameter {name}: expected a whole number from {min} to {max}"
                )),
            },
            ParamKind::Choice(words) => {
                if words.contains(&value) {
                    Ok(())
                } else {
                    Err(format!(
                        "parameter {name}: expected one of {}",
                        words.join(", ")
                    ))
                }
            }
        }
    }
}

/// A run's parameters, checked against the probe's declarations, defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Refuse unknown names, missing required ones and values of the wrong kind.
    pub fn validate(
        specs: &[ParamSpec],
        given: &BTreeMap<String, String>,
    ) -> Result<Params, String> {
        if let Some(unknown) = given.keys().find(|k| !specs.iter().any(|s| s.name == *k)) {
            let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
            return Err(if known.is_empty() {
                format!("unknown parameter {unknown:?}: this probe takes none")
            } else {
                format!(
                    "unknown parameter {unknown:?}: this probe takes {}",
                    known.join(", ")
                )
            });
        }
        let mut out = BTreeMap::new();
        for spec in specs {
            let value = match (given.get(spec.name), spec.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.to_owned(),
                (None, None) if spec.required => {
                    return Err(format!("missing parameter {}", spec.name));
                }
                (None, None) => continue,
            };
            spec.check(&value)?;
            out.insert(spec.name.to_owned(), value);
        }
        Ok(Params(out))
    }

    /// A parameter's value (validated), if given or defaulted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required parameter's value; a probe asking for one it did not declare
    /// required gets a clear error rather than a panic.
    pub fn text(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("missing parameter {name}"))
    }

    /// A `Number` parameter's value.
    pub fn number(&self, name: &str) -> Result<u64, String> {
        self.text(name)?
            .parse()
            .map_err(|_| format!("parameter {name}: not a number"))
    }
}
