//! The taboo list: the names an `include` of a directory skips.
//!
//! As in logrotate 3.21 it is one list of glob patterns (fnmatch, no
//! flags), starting with `*` + each of 19 default extensions. `tabooext`
//! adds `*EXT` for each extension and `taboopat` adds patterns; with a
//! leading `+` they extend the list, without it they replace all of it.
//! Both may only appear outside a block.

/// The extensions logrotate 3.21 starts with (`logrotate -d` names each as
/// "*EXT pattern match"; its man page lists only 17 of them).
const DEFAULT_EXTS: [&str; 19] = [
    ",v",
    ".bak",
    ".cfsaved",
    ".disabled",
    ".dpkg-bak",
    ".dpkg-del",
    ".dpkg-dist",
    ".dpkg-new",
    ".dpkg-old",
    ".dpkg-tmp",
    ".rhn-cfg-tmp-*",
    ".rpmnew",
    ".rpmorig",
    ".rpmsave",
    ".swp",
    ".ucf-dist",
    ".ucf-new",
    ".ucf-old",
    "~",
];

#[derive(Debug, Clone)]
pub struct Taboo {
    patterns: Vec<glob::Pattern>,
}

impl Default for Taboo {
    fn default() -> Self {
        Taboo {
            patterns: DEFAULT_EXTS.iter().filter_map(|e| ext_pattern(e)).collect(),
        }
    }
}

fn ext_pattern(ext: &str) -> Option<glob::Pattern> {
    glob::Pattern::new(&format!("*{ext}")).ok()
}

impl Taboo {
    /// Whether an included directory's entry `name` is skipped.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }

    /// `tabooext [+] LIST` (`ext` true) or `taboopat [+] LIST`: the list
    /// is separated by commas and white space.
    pub fn directive(&mut self, ext: bool, args: &[String]) -> Result<(), String> {
        let mut words: Vec<&str> = args
            .iter()
            .flat_map(|a| a.split([',', ' ', '\t']))
            .filter(|w| !w.is_empty())
            .collect();
        let extend = match words.first() {
            Some(&"+") => {
                words.remove(0);
                true
            }
            Some(w) if w.starts_with('+') => {
                words[0] = &words[0][1..];
                true
            }
            _ => false,
        };
        let mut new = vec![];
        for w in words {
            let p = if ext {
                ext_pattern(w)
            } else {
                glob::Pattern::new(w).ok()
            };
            new.push(p.ok_or_else(|| format!("invalid taboo pattern '{w}'"))?);
        }
        if !extend {
            self.patterns.clear();
        }
        self.patterns.extend(new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn defaults_are_logrotates_nineteen() {
        let t = Taboo::default();
        for n in [
            "a.bak",
            "a.dpkg-tmp",
            "a.ucf-dist",
            "a.ucf-new",
            "a.ucf-old",
            "a~",
            "a,v",
            "a.rhn-cfg-tmp-123",
        ] {
            assert!(t.matches(n), "{n}");
        }
        for n in ["a.conf", "a.old", "a.orig", "a.tmp", "a.save"] {
            assert!(!t.matches(n), "{n}");
        }
    }

    #[test]
    fn tabooext_and_taboopat_replace_or_extend_one_list() {
        let mut t = Taboo::default();
        t.directive(true, &args("+ .foo, .conf")).unwrap();
        assert!(t.matches("a.foo") && t.matches("a.conf") && t.matches("a.bak"));
        t.directive(true, &args(".foo")).unwrap();
        assert!(t.matches("a.foo") && !t.matches("a.bak") && !t.matches("a.conf"));
        t.directive(false, &args("+ b.*")).unwrap();
        assert!(t.matches("b.conf") && t.matches("x.foo"));
        t.directive(false, &args("b.*")).unwrap();
        assert!(
            !t.matches("x.foo"),
            "taboopat without + replaces the extensions too"
        );
    }
}
