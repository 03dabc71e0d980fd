import ArgumentParser

@main
struct VoiceMeterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voicemeter",
        abstract: "Real-time cost metering for live voice-AI calls.",
        discussion: """
            Every command talks to PostgreSQL. With DATABASE_URL (or --database-url) it uses that server; \
            without, it starts (or reuses) a private PostgreSQL cluster under a per-user data directory \
            and applies the migrations, so a first run needs nothing but an installed PostgreSQL.

            Examples:
              voicemeter migrate
              voicemeter tokens create pipeline-eu
              DATABASE_URL=postgresql://voicemeter@db.internal/voicemeter voicemeter serve
            """,
        subcommands: [Demo.self, Migrate.self, Serve.self, Pricing.self, Reprice.self, Budgets.self, Report.self, Reconcile.self, Tokens.self, Database.self]
    )
}
