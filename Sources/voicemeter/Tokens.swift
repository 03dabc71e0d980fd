import ArgumentParser
import VoiceMeterStore

struct Tokens: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the bearer tokens voice pipelines and finance tools authenticate with.",
        discussion: "Only a SHA-256 digest of each token is stored; a token is printed once, when it is created.",
        subcommands: [Create.self, Revoke.self, List.self]
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token and print it once, on the last line of standard output.",
            discussion: "Example: TOKEN=$(voicemeter tokens create pipeline-1 | tail -n 1)"
        )
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "A unique name: 1 to 64 letters, digits, '.', '_' or '-'.")
        var name: String
        @Option(help: "ingest (streams usage) or finance (reads the finance API).")
        var kind: String = "ingest"
        @Option(help: ArgumentHelp("An ingest token may open calls only for user_ids that start with this (one tenant's pipelines); default: any user.",
                                   valueName: "prefix"))
        var scope: String?

        func validate() throws {
            guard TokenKind(rawValue: kind) != nil else {
                throw ValidationError("--kind must be one of: \(TokenKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if scope != nil, kind != TokenKind.ingest.rawValue {
                throw ValidationError("--scope limits an ingest token's users; a finance token has none (drop --scope)")
            }
        }

        func run() throws {
            let store = TokenStore(connection: try database.connect())
            let secret = try store.create(name: name, kind: TokenKind(rawValue: kind)!, userScope: scope)
            let limited = scope.map { ", for user_ids starting with '\($0)'" } ?? ""
            print("Created \(kind) token '\(name)'\(limited). Store it now: it cannot be shown again.")
            print(secret)
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a token; a running server refuses it and closes its connections within a second."
        )
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The token's name (see `voicemeter tokens list`).")
        var name: String

        func run() throws {
            try TokenStore(connection: try database.connect()).revoke(name: name)
            print("Revoked token '\(name)'.")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (names, kinds, prefixes; never secrets).")
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let tokens = try TokenStore(connection: try database.connect()).list()
            guard !tokens.isEmpty else {
                print("No tokens yet. Create one with: voicemeter tokens create NAME")
                return
            }
            let rows = tokens.map {
                [$0.name, $0.kind.rawValue, $0.kind == .ingest ? $0.userScope.map { "\($0)*" } ?? "any user" : "-", $0.prefix + "…", $0.createdAt,
                 $0.revokedAt.map { "revoked \($0)" } ?? "active"]
            }
            print(TextTable(header: ["NAME", "KIND", "USERS", "PREFIX", "CREATED", "STATUS"], rows: rows).rendered)
        }
    }
}
