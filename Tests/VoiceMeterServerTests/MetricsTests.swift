import Foundation
import Testing
import VoiceMeterTestSupport

@Suite("Prometheus metrics at /metrics", .serialized)
struct MetricsTests {
    /// Scrapes /metrics as Prometheus would: one line per sample, `name{labels} value`.
    private func scrape(_ port: Int) throws -> [String: Double] {
        let socket = try RawSocket(port: port)
        socket.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        let (response, _) = socket.readUntilClosed()
        #expect(response.hasPrefix("HTTP/1.1 200"))
        #expect(response.lowercased().contains("content-type: text/plain; version=0.0.4"))
        var samples: [String: Double] = [:]
        for line in response.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Double(parts[1].trimmingCharacters(in: .whitespacesAndNewlines)) { samples[String(parts[0])] = value }
        }
        return samples
    }

    @Test("a scrape after a call shows connections, frames, rejections by code, commits, latencies and queue depth")
    func scrapeAfterACall() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let before = try scrape(running.server.port)
            let client = try StreamingClient(running.endpoint)
            client.send([#"{"type":"usage","call_id":"M1","seq":"#] + running.canonicalCallMessages("M1"))
            #expect(client.waitForSummary())
            let after = try scrape(running.server.port)
            func grew(_ name: String, by amount: Double) -> Bool { (after[name] ?? 0) - (before[name] ?? 0) >= amount }
            #expect(grew("voicemeter_frames_received_total", by: 70))
            #expect(grew("voicemeter_events_committed_total", by: 70))
            #expect(grew(#"voicemeter_frames_rejected_total{code="invalid_json"}"#, by: 1))
            #expect(after[#"voicemeter_frames_rejected_total{code="seq_conflict"}"#] != nil)
            #expect((after["voicemeter_connections"] ?? 0) >= 1)
            #expect(grew("voicemeter_commit_duration_seconds_count", by: 1))
            #expect(grew("voicemeter_ack_latency_seconds_count", by: 1))
            #expect(grew("voicemeter_commit_batch_events_sum", by: 70))
            #expect(after[#"voicemeter_commit_duration_seconds_bucket{le="+Inf"}"#] != nil)
            for name in ["voicemeter_writer_queue_events", "voicemeter_budget_cutoffs_total", "voicemeter_budget_warnings_total",
                         "voicemeter_unpriced_events_total", "voicemeter_database_reconnects_total"] {
                #expect(after[name] != nil, "\(name) missing")
            }
            #expect((after["voicemeter_writer_queue_events"] ?? -1) >= 0)
        }
    }
}
