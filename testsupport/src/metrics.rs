//! Reading the Prometheus text format the roles serve at `/metrics`.

/// The value of the sample `name` whose labels include every `(label, value)` of `labels`
/// (summed over the samples that match, as a counter split by further labels should be).
/// `None` when no sample matches.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, number)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(label, value)| label_text.contains(&format!("{label}=\"{value}\"")));
        if let (true, Ok(number)) = (matches, number.parse::<f64>()) {
            *total.get_or_insert(0.0) += number;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::value;

    const TEXT: &str = "# HELP x help\n# TYPE x counter\n\
        chat4all_http_requests_total{route=\"send\",status=\"202\"} 3\n\
        chat4all_http_requests_total{route=\"send\",status=\"400\"} 2\n\
        chat4all_relay_leader 1\n";

    #[test]
    fn samples_are_found_by_name_and_labels_and_summed() {
        assert_eq!(value(TEXT, "chat4all_relay_leader", &[]), Some(1.0));
        assert_eq!(
            value(TEXT, "chat4all_http_requests_total", &[("route", "send")]),
            Some(5.0)
        );
        assert_eq!(
            value(TEXT, "chat4all_http_requests_total", &[("status", "400")]),
            Some(2.0)
        );
        assert_eq!(value(TEXT, "chat4all_missing", &[]), None);
    }
}
