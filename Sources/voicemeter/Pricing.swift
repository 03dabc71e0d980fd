import ArgumentParser
import Foundation
import VoiceMeterDomain
import VoiceMeterStore

struct Pricing: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show and change the versioned prices usage is charged at.",
        discussion: """
            A price is keyed by service, operation, model ('' for the service default) and unit, and is \
            in force on [effective_from, effective_to). Changing a price closes the open version and \
            opens a new one at the same instant; running servers pick it up within a second.
            """,
        subcommands: [List.self, Set.self, Import.self]
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the prices in force at a time (default: now).",
            discussion: "Example: voicemeter pricing list --at 2026-01-01T00:00:00Z"
        )
        @OptionGroup var database: DatabaseOptions
        @Option(help: ArgumentHelp("RFC 3339 time to show the prices of.", valueName: "time"))
        var at: String?
        @Flag(help: "Every version, past and future, not only those in force.")
        var all = false

        func run() throws {
            let instant = try at.map { try PriceInput.timestamp($0) } ?? Timestamp.now
            let book = try PriceStore(connection: try database.connect()).load()
            let versions = all ? book.versions : book.inForce(at: instant)
            guard !versions.isEmpty else {
                print("No prices in force at \(instant). Add one with: voicemeter pricing set SERVICE OPERATION --unit U --price P")
                return
            }
            let rows = versions.map { version -> [String] in
                let price: String = switch version.rule {
                case .perUnit(let unitPrice): "\(unitPrice) per \(version.key.unit.rawValue.dropLast())"
                case .percentPlusFixed(let percent, let fixed): "\(percent)% + \(fixed)"
                }
                let increment = version.billingIncrement.map { version.key.unit.secondsPerUnit == nil ? "\($0)" : "\($0)s" } ?? "-"
                return [String(version.id), version.key.service, version.key.operation, version.key.model.isEmpty ? "(default)" : version.key.model,
                        price, increment, version.effectiveFrom.description, version.effectiveTo?.description ?? "open"]
            }
            print(TextTable(header: ["ID", "SERVICE", "OPERATION", "MODEL", "PRICE (USD)", "INCREMENT", "FROM", "TO"], rows: rows).rendered)
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Open a new price version, closing the current one at the same instant.",
            discussion: """
                Examples:
                  voicemeter pricing set twilio voice_outbound --unit minutes --price 0.014 --increment 1m
                  voicemeter pricing set deepgram stt_streaming --model nova-3 --unit minutes --price 0.0077 \\
                      --increment 1s --effective-from 2026-12-01T00:00:00Z
                  voicemeter pricing set stripe payment --model card --unit transactions --percent 3.4 --fixed 0.30
                """
        )
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Service, e.g. twilio, deepgram, cerebras, elevenlabs.") var service: String
        @Argument(help: "Operation, e.g. voice_outbound, stt_streaming, chat_completion, tts_generation.") var operation: String
        @Option(help: "The unit the price is per: \(UsageUnit.allCases.map(\.rawValue).joined(separator: ", ")).") var unit: String
        @Option(help: "USD per one unit (at most 12 decimal places).") var price: String?
        @Option(help: "Model; omit for the service/operation default.") var model: String?
        @Option(help: ArgumentHelp("Billing increment per call, rounded up: 60s or 1m for time units, a count otherwise.", valueName: "N{s|m}"))
        var increment: String?
        @Option(help: "Least billed per call once used (same form as --increment).") var minimum: String?
        @Option(help: "Payment fee percent of the charge (with --unit transactions), e.g. 3.4.") var percent: String?
        @Option(help: "Payment fee fixed part in USD, e.g. 0.30.") var fixed: String?
        @Option(name: .customLong("effective-from"), help: ArgumentHelp("RFC 3339 start time (default: now).", valueName: "time"))
        var effectiveFrom: String?

        func run() throws {
            let change = try PriceInput.change(.init(
                service: service, operation: operation, model: model, unit: unit, price: price, increment: increment,
                minimum: minimum, percentFee: percent, fixedFee: fixed, effectiveFrom: effectiveFrom
            ), now: .now)
            let version = try PriceStore(connection: try database.connect()).set(change)
            print("Price \(version.id) for \(version.key) is in force from \(version.effectiveFrom).")
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply many price changes from a CSV or JSON file, all or none.",
            discussion: """
                CSV starts with a header row naming some of: service, operation, model, unit, price, increment, \
                minimum, percent_fee, fixed_fee, effective_from. JSON is an array of objects with those fields.
                Example CSV:
                  service,operation,model,unit,price,increment,effective_from
                  deepgram,stt_streaming,nova-3,minutes,0.0077,1s,2026-12-01T00:00:00Z
                """
        )
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Path of the .csv or .json file.") var file: String

        func run() throws {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw CommandFailure("cannot read \(file) as UTF-8 text; check the path")
            }
            let changes = try PriceFile.parse(text, now: .now)
            let versions = try PriceStore(connection: try database.connect()).importChanges(changes)
            print("Imported \(versions.count) price version(s) from \(file).")
        }
    }
}

struct Reprice: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Price stored usage that had no price in force, now that prices exist.",
        discussion: """
            Unpriced usage is never dropped: it is stored, flagged and alerted. After adding the missing \
            price (voicemeter pricing set …), run this to price those events and update the rollups \
            exactly. Safe to run repeatedly and while the server runs.
            """
    )
    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let connection = try database.connect()
        let summary = try Repricer(connection: connection).run(book: PriceStore(connection: connection).load())
        print("Priced \(summary.eventsPriced) event(s) in \(summary.callsExamined) call(s); \(summary.eventsStillUnpriced) still have no price in force.")
    }
}
