//! A strict reader of the Prometheus text exposition format (version 0.0.4), enough to
//! check that `/metrics` is valid and to read values by name and labels. Written here
//! because the small crates for it split label values on `,` and `}`, which route
//! templates such as `/v1/events/{id}` contain.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` of each metric family.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses the whole text; `Err` names the first line that is not valid.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut scrape = Scrape::default();
        for (n, line) in text.lines().enumerate() {
            let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                match words.next() {
                    Some("TYPE") => {
                        let name = words.next().ok_or_else(|| fail("TYPE without a name"))?;
                        let kind = words.next().ok_or_else(|| fail("TYPE without a type"))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(fail("unknown type"));
                        }
                        if !is_metric_name(name) {
                            return Err(fail("bad metric name"));
                        }
                        scrape.types.insert(name.to_string(), kind.to_string());
                    }
                    Some("HELP") if words.next().is_none_or(|w| !is_metric_name(w)) => {
                        return Err(fail("HELP without a metric name"));
                    }
                    _ => {}
                }
                continue;
            }
            scrape
                .samples
                .push(parse_sample(line).map_err(|why| fail(&why))?);
        }
        Ok(scrape)
    }

    /// The sum of the samples named `name` that carry all of `labels` (0 when none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let key = rest[..eq].trim();
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            let (value, after) = quoted(&rest[eq + 1..])?;
            labels.insert(key.to_string(), value);
            rest = after.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .map_err(|_| format!("value {v:?} is not a number"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("timestamp {ts:?} is not an integer"))?;
    }
    if fields.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A `"…"` label value with `\\`, `\"` and `\n` escapes; returns it and the rest.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let body = text.strip_prefix('"').ok_or("label value not quoted")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => return Err(format!("bad escape {other:?}")),
            },
            c => value.push(c),
        }
    }
    Err("unterminated label value".into())
}

#[test]
fn reads_label_values_with_braces_and_escapes() {
    let scrape = Scrape::parse(
        "# HELP x_total Some help.\n# TYPE x_total counter\n\
         x_total{route=\"/v1/events/{id}\",q=\"a,\\\"b\\\"\"} 3\nx_total 1.5e1\n",
    )
    .unwrap();
    assert_eq!(
        scrape.value("x_total", &[("route", "/v1/events/{id}")]),
        3.0
    );
    assert_eq!(scrape.samples[0].labels["q"], "a,\"b\"");
    assert_eq!(scrape.value("x_total", &[]), 18.0);
    assert!(Scrape::parse("x_total{route=\"open} 1\n").is_err());
    assert!(Scrape::parse("x_total one\n").is_err());
    assert!(Scrape::parse("# TYPE x_total counterish\n").is_err());
}
