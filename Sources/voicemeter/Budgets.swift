import ArgumentParser
import VoiceMeterDomain
import VoiceMeterStore

struct Budgets: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show and change users' budgets (per call, per day, per month).",
        discussion: "Changes reach running servers within a second. Example: voicemeter budgets set USER --call-limit 5 --month-limit 50",
        subcommands: [Set.self, Show.self, Defaults.self]
    )

    static let defaults = BudgetPolicy.seedDefaults

    static func describe(_ limit: ExactDecimal?) -> String { limit.map { "\($0.formatted(scale: 2)) USD" } ?? "none" }

    /// The line saying when warnings come and whether cutoff is automatic.
    static func describeWarnings(_ policy: BudgetPolicy) -> String {
        "warnings at \(policy.callWarningPercents.map { "\($0)%" }.joined(separator: ", ")) of the call limit and "
            + "\(policy.periodWarningPercents.map { "\($0)%" }.joined(separator: ", ")) of day and month; auto-cutoff \(policy.autoCutoff ? "on" : "off")"
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a user's limits; options not given keep their value.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The user id the pipeline sends as user_id.") var userID: String
        @Option(name: .customLong("call-limit"), help: "Most one call may cost, in USD.") var callLimit: String?
        @Option(name: .customLong("day-limit"), help: "Most the user may spend per UTC day, in USD.") var dayLimit: String?
        @Option(name: .customLong("month-limit"), help: "Most the user may spend per UTC month, in USD.") var monthLimit: String?
        @Option(name: .customLong("warn-percent"), help: "First warning at this percent of the call limit (1-100).") var warnPercent: Int?
        @Option(name: .customLong("auto-cutoff"), help: "on: cut calls off at a limit; off: only warn.") var autoCutoff: String?

        func validate() throws {
            for (flag, value) in [("--call-limit", callLimit), ("--day-limit", dayLimit), ("--month-limit", monthLimit)] {
                guard let value else { continue }
                guard let amount = ExactDecimal(value), !amount.isNegative, amount.normalized.scale <= 4 else {
                    throw ValidationError("\(flag) '\(value)' must be a non-negative amount in USD with at most 4 decimals, e.g. 10 or 2.50")
                }
            }
            if let warnPercent, !(1...100).contains(warnPercent) { throw ValidationError("--warn-percent must be 1 to 100") }
            if let autoCutoff, autoCutoff != "on", autoCutoff != "off" { throw ValidationError("--auto-cutoff takes on or off") }
            guard [callLimit, dayLimit, monthLimit, autoCutoff].contains(where: { $0 != nil }) || warnPercent != nil else {
                throw ValidationError("nothing to change: give at least one of --call-limit, --day-limit, --month-limit, --warn-percent, --auto-cutoff")
            }
        }

        func run() throws {
            let store = BudgetStore(connection: try database.connect())
            try store.update(userID, with: BudgetSettings(
                callLimit: callLimit.flatMap { ExactDecimal($0) }, dayLimit: dayLimit.flatMap { ExactDecimal($0) },
                monthLimit: monthLimit.flatMap { ExactDecimal($0) }, warnPercent: warnPercent, autoCutoff: autoCutoff.map { $0 == "on" }
            ))
            print("Budget of \(userID) updated.")
            try Show.print(store: store, userID: userID)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A user's limits, spend today and this month, what running servers hold granted, and what remains.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The user id.") var userID: String

        func run() throws {
            try Self.print(store: BudgetStore(connection: try database.connect()), userID: userID)
        }

        static func print(store: BudgetStore, userID: String) throws {
            let snapshot = try store.snapshot(of: userID, at: .now)
            let policy = snapshot.settings.policy(over: Budgets.defaults)
            let grants = try store.grants(of: userID)
            let granted = grants.filter { !$0.expired }.reduce(ExactDecimal.zero) { (try? $0.adding($1.amount)) ?? $0 }
            func remaining(_ limit: ExactDecimal?, _ spent: ExactDecimal) -> String {
                limit.map { ((try? $0.subtracting(spent).subtracting(granted)) ?? .zero).formatted(scale: 2) + " USD" } ?? "-"
            }
            let held = granted.formatted(scale: 4) + " USD"
            let rows = [
                ["per call", Budgets.describe(policy.callLimit), "-", "-", "-"],
                ["today (UTC)", Budgets.describe(policy.dayLimit), snapshot.daySpent.formatted(scale: 4) + " USD", held, remaining(policy.dayLimit, snapshot.daySpent)],
                ["this month", Budgets.describe(policy.monthLimit), snapshot.monthSpent.formatted(scale: 4) + " USD", held,
                 remaining(policy.monthLimit, snapshot.monthSpent)],
            ]
            Swift.print(TextTable(header: ["SCOPE", "LIMIT", "SPENT", "GRANTED, UNSPENT", "REMAINING"], rows: rows).rendered)
            Swift.print(Budgets.describeWarnings(policy))
            guard !grants.isEmpty else { return }
            Swift.print("\nGranted to running servers (each metering core holds what it may still spend; a server that died holds its grant until it expires):")
            Swift.print(TextTable(header: ["HOLDER (HOST/PID/START/CORE)", "GRANTED, UNSPENT", "EXPIRES"], rows: grants.map { grant in
                [grant.holder, grant.amount.formatted(scale: 4) + " USD", "\(grant.expiresAt)" + (grant.expired ? " (expired: freed by the next grant)" : "")]
            }).rendered)
        }
    }

    struct Defaults: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The limits of users without settings of their own.")
        func run() {
            let policy = Budgets.defaults
            print("per call: \(Budgets.describe(policy.callLimit)); per day: \(Budgets.describe(policy.dayLimit)); per month: \(Budgets.describe(policy.monthLimit))")
            print(Budgets.describeWarnings(policy))
        }
    }
}
