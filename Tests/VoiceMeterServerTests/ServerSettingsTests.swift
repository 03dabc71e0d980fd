import EmbeddedPostgres
import Foundation
import Logging
import Testing
import VoiceMeterDatabase
import VoiceMeterDomain
@testable import VoiceMeterServer

@Suite("Server settings: flags, environment, file, defaults")
struct ServerSettingsTests {
    let file = (path: "voicemeter.conf", text: """
        # production
        writer-connections = 3
        flush-ms = 50
        log-format = "json"   # for the log shipper
        """)

    @Test("messages-per-second sets each connection's message rate, its burst (twice) and the message pieces the listener allows with them (16 each)")
    func messageRateCarriesItsPieces() throws {
        var configuration = ServerConfiguration(database: .init(connectionString: ""))
        try ServerSettings(flags: ["messages-per-second": "40"], environment: [:], file: nil).apply(to: &configuration)
        #expect(configuration.ingress.messagesPerSecondPerConnection == 40)
        #expect(configuration.ingress.messagesBurstPerConnection == 80)
        #expect(configuration.listener.limits.messagePiecesPerSecondPerConnection == 640)
        #expect(configuration.listener.limits.messagePiecesBurstPerConnection == 1_280)
        // The defaults agree with the rule.
        let defaults = ServerConfiguration(database: .init(connectionString: ""))
        #expect(defaults.listener.limits.messagePiecesPerSecondPerConnection
                == defaults.ingress.messagesPerSecondPerConnection * ServerConfiguration.messagePiecesPerMessage)
        #expect(defaults.listener.limits.messagePiecesBurstPerConnection
                == defaults.ingress.messagesBurstPerConnection * ServerConfiguration.messagePiecesPerMessage)
    }

    @Test("a flag beats the environment, the environment beats the file, the file beats the default")
    func precedence() throws {
        let settings = try ServerSettings(flags: ["flush-ms": "10"],
                                          environment: ["VOICEMETER_FLUSH_MS": "20", "VOICEMETER_WRITER_CONNECTIONS": "4", "VOICEMETER_METERING_SHARDS": "3"], file: file)
        #expect(settings["flush-ms"] == "10")
        #expect(settings["writer-connections"] == "4")
        #expect(settings["log-format"] == "json")
        #expect(settings["batch-events"] == "2000")
        #expect(settings["default-day-limit"] == nil)
        var configuration = ServerConfiguration(database: .init(connectionString: ""))
        try settings.apply(to: &configuration)
        #expect(configuration.writerFlushIntervalMilliseconds == 10)
        #expect(configuration.writerConnections == 4)
        #expect(configuration.meteringShards == 3)
        #expect(configuration.defaultBudget.callLimit == ExactDecimal(10))
        #expect(configuration.listener.port == 8787)
    }

    @Test("a bad value fails naming the setting and where it came from")
    func invalidValuesNamed() throws {
        let cases: [([String: String], [String: String], String)] = [
            (["writer-connections": "0"], [:], "--writer-connections = '0' is not valid: expected a whole number from 1 to 64"),
            ([:], ["VOICEMETER_LISTEN": "8787"], "VOICEMETER_LISTEN = '8787' is not valid: expected host:port"),
            ([:], ["VOICEMETER_DEFAULT_MONTH_LIMIT": "-5"], "VOICEMETER_DEFAULT_MONTH_LIMIT = '-5' is not valid: expected an amount in USD"),
            (["log-format": "xml"], [:], "--log-format = 'xml' is not valid: expected one of text, json"),
            (["tls-cert": "/nonexistent/cert.pem"], [:], "--tls-cert = '/nonexistent/cert.pem' is not valid: cannot read the file"),
        ]
        for (flags, environment, expected) in cases {
            var configuration = ServerConfiguration(database: .init(connectionString: ""))
            do {
                try ServerSettings(flags: flags, environment: environment, file: nil).apply(to: &configuration)
                Issue.record("accepted \(flags) \(environment)")
            } catch {
                #expect(error.description.hasPrefix(expected), "\(error)")
            }
        }
    }

    @Test("a file with an unknown key or a line that is not key = value is refused with its line")
    func badFiles() {
        for (text, expected) in [("writer-conections = 3", "voicemeter.conf:1: unknown setting 'writer-conections'"),
                                 ("\nflush-ms 50", "voicemeter.conf:2: expected key = value")] {
            #expect {
                try ServerSettings(flags: [:], environment: [:], file: (path: "voicemeter.conf", text: text))
            } throws: { error in
                (error as? ServerSettings.Invalid)?.description.hasPrefix(expected) == true
            }
        }
    }

    @Test("a # inside quotes is part of the value, not a comment")
    func quotedHash() throws {
        let settings = try ServerSettings(flags: [:], environment: [:],
                                          file: (path: "f", text: #"database-url = "postgresql://meter:pa#ss@db/voicemeter"   # the primary"#))
        #expect(settings["database-url"] == "postgresql://meter:pa#ss@db/voicemeter")
    }

    @Test("printed settings show every value with its source and never a password")
    func printed() throws {
        let settings = try ServerSettings(flags: [:], environment: ["DATABASE_URL": "postgresql://meter:s3cret@db.internal/voicemeter?sslpassword=k3y"], file: file)
        let printed = settings.printed
        #expect(!printed.contains("s3cret") && !printed.contains("k3y"))
        #expect(printed.contains("password=***"))
        #expect(singleSpaced(printed).contains("writer-connections = 3 # file:"))
        #expect(singleSpaced(printed).contains("batch-events = 2000 # default:"))
        #expect(printed.split(separator: "\n").count == ServerSettings.all.count)
    }

    /// The text with every run of spaces made one (the printed columns are as wide as the longest key).
    private func singleSpaced(_ text: String) -> String {
        text.replacingOccurrences(of: " +", with: " ", options: .regularExpression)
    }

    /// The `voicemeter` executable built next to this test bundle.
    private var voicemeter: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("voicemeter").path
    }

    @Test("voicemeter serve --print-config prints the effective settings; a bad setting stops it before it starts")
    func commandLine() throws {
        try #require(FileManager.default.isExecutableFile(atPath: voicemeter), "build the voicemeter product first (swift build)")
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("voicemeter-\(getpid()).conf").path
        try "writer-connections = 3\n".write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(config) }
        let printed = try ProcessRunner.run(voicemeter, ["serve", "--config", config, "--listen", "0.0.0.0:9000", "--print-config"])
        #expect(printed.exitCode == 0)
        #expect(singleSpaced(printed.output).contains("listen = 0.0.0.0:9000 # flag:"))
        #expect(singleSpaced(printed.output).contains("writer-connections = 3 # file:"))
        let refused = try ProcessRunner.run(voicemeter, ["serve", "--config", config, "--flush-ms", "soon"])
        #expect(refused.exitCode == 64)
        #expect(refused.output.contains("--flush-ms = 'soon' is not valid: expected a whole number"))
    }
}

@Suite("JSON log lines")
struct JSONLogHandlerTests {
    @Test("a log line is one JSON object with time, level, message and every metadata field")
    func line() throws {
        var handler = JSONLogHandler(label: "voicemeter", level: .info)
        handler[metadataKey: "node"] = "a"
        let event = LogEvent(level: .warning, message: "call cut off", metadata: ["call.id": "CA\"1", "user.id": "u1"],
                             source: "VoiceMeterServer", file: "f", function: "g", line: 1)
        let line = handler.line(for: event, at: Timestamp(rfc3339: "2026-11-22T18:00:00Z")!)
        #expect(line == #"{"ts":"2026-11-22T18:00:00Z","level":"warning","label":"voicemeter","message":"call cut off","source":"VoiceMeterServer","call.id":"CA\"1","node":"a","user.id":"u1"}"#)
        #expect(try JSONParser.parse(line)["call.id"] == .string("CA\"1"))
    }
}

@Suite("Settings are declared once")
struct SettingDeclarationTests {
    @Test("the README's settings table has a row for each declared setting, with its environment variable, and no other")
    func readmeTableMatchesTheDeclarations() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md").standardizedFileURL
        let text = try String(contentsOf: readme, encoding: .utf8)
        let rows = text.split(separator: "\n").compactMap { line -> (String, String)? in
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 3, cells[0].hasPrefix("`"), cells[1].hasPrefix("`VOICEMETER_") || cells[1] == "`DATABASE_URL`" else { return nil }
            return (cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`")), cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`")))
        }
        let declared = ServerSettings.all.map { ($0.key, $0.environment) }
        #expect(rows.map(\.0) == declared.map(\.0))
        #expect(rows.map(\.1) == declared.map(\.1))
    }

    @Test("flags are read against the declarations: --key value, --key=value; an unknown key or a missing value is named")
    func flagsAreReadAgainstTheDeclarations() throws {
        #expect(try ServerSettings.flags(from: ["--listen", "127.0.0.1:0", "--flush-ms=10"]) == ["listen": "127.0.0.1:0", "flush-ms": "10"])
        #expect(throws: ServerSettings.Invalid.self) { try ServerSettings.flags(from: ["--lisen", "x"]) }
        #expect(throws: ServerSettings.Invalid.self) { try ServerSettings.flags(from: ["--flush-ms"]) }
        #expect(throws: ServerSettings.Invalid.self) { try ServerSettings.flags(from: ["stray"]) }
    }

    @Test("every value is checked against its declared form, also those no configuration field reads")
    func everyValueIsChecked() throws {
        let settings = try ServerSettings(flags: ["log-level": "loud"], environment: [:], file: nil)
        #expect(throws: ServerSettings.Invalid.self) { try settings.validate() }
    }
}
