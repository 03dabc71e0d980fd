import Metrics
import VoiceMeterLedger
import struct Prometheus.PrometheusMetricsFactory
import class Prometheus.PrometheusCollectorRegistry
import VoiceMeterDomain

/// The process's metrics: swift-metrics handles, backed by one Prometheus registry that
/// `GET /metrics` renders in the text exposition format.
public enum MetricsExport {
    /// Bootstraps swift-metrics with this registry the first time it is used (once per process).
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000].map { Duration.milliseconds($0) }
        factory.valueHistogramBuckets[LedgerMetrics.batchEventsLabel] = [1, 10, 50, 100, 250, 500, 1_000, 2_000, 5_000]
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// Every metric in Prometheus text format.
    public static func render() -> String { registry.emitToString() }
}
