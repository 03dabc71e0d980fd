import ArgumentParser
import Foundation
import VoiceMeterDomain
import VoiceMeterStore

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Finance reports: a call's costs, per-call margins, a month's P&L, top users.",
        discussion: "Money is printed exactly as stored. --format csv or json suits tools; table suits people.",
        subcommands: [Call.self, Margins.self, Month.self, TopUsers.self]
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, csv, json
    }

    static func print(_ report: ReportRows, as format: Format) {
        switch format {
        case .table:
            guard !report.rows.isEmpty else { Swift.print("(no rows)"); return }
            Swift.print(TextTable(header: report.columns.map { $0.uppercased() }, rows: report.rows.map { $0.map { $0 ?? "" } }).rendered)
        case .csv:
            Swift.print(report.csv, terminator: "")
        case .json:
            Swift.print(report.json)
        }
    }

    /// `YYYY-MM` → the month's first instant (UTC); `nil` → this month.
    static func month(_ text: String?) throws -> Timestamp {
        guard let text else { return Timestamp.now.startOfMonth }
        guard let start = Timestamp(rfc3339: text + "-01T00:00:00Z") else {
            throw ValidationError("'\(text)' is not a month; write YYYY-MM, e.g. 2026-11")
        }
        return start
    }

    struct Call: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A call's events and its cost breakdown and margin (seed 002 getCallCosts).")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The call id.") var callID: String
        @Option(help: "table, csv or json.") var format: Format = .table

        func run() throws {
            let store = FinanceStore(connection: try database.connect())
            let margin = try store.callMargin(callID)
            guard !margin.rows.isEmpty else { throw CommandFailure("no admitted call '\(callID)'; `voicemeter report margins --from … --to …` lists calls") }
            Report.print(try store.callEvents(callID), as: format)
            if format == .table { Swift.print("") }
            Report.print(margin, as: format)
        }
    }

    struct Margins: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per-call revenue, API cost, payment fee, fixed-cost share and margin for calls started in a range.",
            discussion: "Example: voicemeter report margins --from 2026-11-01 --to 2026-12-01 --format csv"
        )
        @OptionGroup var database: DatabaseOptions
        @Option(help: "First day (YYYY-MM-DD) or instant (RFC 3339), inclusive.") var from: String
        @Option(help: "End day or instant, exclusive.") var to: String
        @Option(help: "Only this user's calls.") var user: String?
        @Option(help: "table, csv or json.") var format: Format = .table

        static func instant(_ text: String, _ flag: String) throws -> Timestamp {
            if let instant = Timestamp(dayOrInstant: text) { return instant }
            throw ValidationError("\(flag) '\(text)' is not a date; write YYYY-MM-DD or an RFC 3339 time")
        }

        func run() throws {
            let start = try Self.instant(from, "--from")
            let end = try Self.instant(to, "--to")
            guard start < end else { throw ValidationError("--from must be before --to") }
            Report.print(try FinanceStore(connection: try database.connect()).margins(from: start, to: end, userID: user), as: format)
        }
    }

    struct Month: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A month's P&L: calls, revenue, costs by kind, gross profit, break-even calls.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "YYYY-MM (default: this month, UTC).") var month: String?
        @Option(help: "table, csv or json.") var format: Format = .table

        func run() throws {
            Report.print(try FinanceStore(connection: try database.connect()).month(try Report.month(month)), as: format)
        }
    }

    struct TopUsers: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "top-users", abstract: "The users who cost most this month (or --month).")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "How many users.") var limit = 10
        @Option(help: "YYYY-MM (default: this month).") var month: String?
        @Option(help: "table, csv or json.") var format: Format = .table

        func run() throws {
            guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
            Report.print(try FinanceStore(connection: try database.connect()).topUsers(month: try Report.month(month), limit: limit), as: format)
        }
    }
}
