import Foundation

/// CPU time and memory of processes, read from `/proc` (Linux).
enum ProcessStats {
    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// User plus system CPU seconds a process has used so far.
    static func cpuSeconds(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name: state is the 3rd field of the line, utime the 14th, stime the 15th.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / ticksPerSecond
    }

    /// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
    static func residentBytes(pid: Int32) -> (now: Int, peak: Int)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func kilobytes(_ key: String) -> Int? {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return nil }
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        }
        guard let now = kilobytes("VmRSS"), let peak = kilobytes("VmHWM") else { return nil }
        return (now * 1_024, peak * 1_024)
    }

    /// CPU seconds of every local PostgreSQL process (postmaster, backends, background workers);
    /// `nil` when none runs here (a remote `DATABASE_URL`).
    static func postgresCPUSeconds() -> Double? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        var total = 0.0
        var found = false
        for entry in entries {
            guard let pid = Int32(entry),
                  let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                  command.hasPrefix("postgres"), let seconds = cpuSeconds(pid: pid) else { continue }
            total += seconds
            found = true
        }
        return found ? total : nil
    }
}

/// CPU use of the benchmark's parties over a measured interval, in percent of one core.
struct CPUSampler {
    private let serverPID: Int32
    private let started: (server: Double?, postgres: Double?, client: Double?, at: ContinuousClock.Instant)

    init(serverPID: Int32) {
        self.serverPID = serverPID
        started = (ProcessStats.cpuSeconds(pid: serverPID), ProcessStats.postgresCPUSeconds(), ProcessStats.cpuSeconds(pid: getpid()), .now)
    }

    /// "server 123%, PostgreSQL 80%, load generator 40% (of one core)".
    func summary() -> String {
        let seconds = (ContinuousClock.now - started.at).seconds
        func percent(_ before: Double?, _ after: Double?) -> String {
            guard let before, let after else { return "n/a" }
            return String(format: "%.0f%%", (after - before) / seconds * 100)
        }
        return "server \(percent(started.server, ProcessStats.cpuSeconds(pid: serverPID))), "
            + "PostgreSQL \(percent(started.postgres, ProcessStats.postgresCPUSeconds())), "
            + "load generator \(percent(started.client, ProcessStats.cpuSeconds(pid: getpid()))) (of one core; 2 cores = 200%)"
    }
}
