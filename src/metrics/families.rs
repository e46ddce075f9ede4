//! Building Prometheus metric families from our own atomics at scrape time: the one place
//! that knows the `prometheus` crate's protobuf types, for every collector of the crate (the
//! data plane's, the wire's, the scaler's).

use prometheus::core::Desc;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// A collector's table of families: name, help, label names, type.
pub(crate) type FamilyTable = [(
    &'static str,
    &'static str,
    &'static [&'static str],
    MetricType,
)];

/// The `Desc` of every entry of `table` (a collector's `desc()`).
pub(crate) fn descs(table: &FamilyTable) -> Vec<Desc> {
    table
        .iter()
        .map(|(name, help, labels, _)| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .expect("static metric names, help and labels are valid")
        })
        .collect()
}

/// One `MetricFamily` per `(name, help, label names, type)` entry, holding its metrics.
pub(crate) fn families(
    table: &[(&str, &str, &[&str], MetricType)],
    metrics: impl IntoIterator<Item = Vec<Metric>>,
) -> Vec<MetricFamily> {
    table
        .iter()
        .zip(metrics)
        .map(|((name, help, _, kind), metrics)| {
            let mut mf = MetricFamily::default();
            mf.set_name(name.to_string());
            mf.set_help(help.to_string());
            mf.set_field_type(*kind);
            mf.set_metric(metrics);
            mf
        })
        .collect()
}

pub(crate) fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

pub(crate) fn counter(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

pub(crate) fn gauge(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}
