import EmbeddedPostgres
import Foundation
import Synchronization

/// A Python virtual environment with packages from PyPI, made once per machine under the system
/// temp directory (or `VOICEMETER_TEST_VENV`, where CI keeps its own), for tests that check what
/// real Python clients see.
public enum TestPython {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private static let prepared = Mutex<[String: String]>([:])

    /// The venv's `python`, with `packages` (pip requirement strings) installed.
    public static func interpreter(with packages: [String]) throws -> String {
        let key = packages.joined(separator: " ")
        if let python = prepared.withLock({ $0[key] }) { return python }
        let directory = ProcessInfo.processInfo.environment["VOICEMETER_TEST_VENV"]
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("voicemeter-test-venv").path
        let python = directory + "/bin/python"
        if !FileManager.default.isExecutableFile(atPath: python) {
            let made = try ProcessRunner.run("/usr/bin/python3", ["-m", "venv", directory])
            guard made.exitCode == 0 else { throw Failure(description: "python3 -m venv \(directory) failed: \(made.output)") }
        }
        let installed = try ProcessRunner.run(python, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"] + packages)
        guard installed.exitCode == 0 else { throw Failure(description: "pip install \(key) failed: \(installed.output)") }
        prepared.withLock { $0[key] = python }
        return python
    }

    /// `Tests/Python/NAME` of this checkout.
    public static func script(_ name: String) -> String {
        URL(fileURLWithPath: TestPostgres.migrationsDirectory).deletingLastPathComponent()
            .appendingPathComponent("Tests/Python/\(name)").path
    }
}
