import ArgumentParser
import Foundation
import MeteringSimulation

/// Explores the metering core by deterministic simulation: seeded schedules of calls, faults
/// and time over several nodes and one ledger, with invariants checked after every step.
struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Drive metering cores on simulated nodes from seeded random schedules and check the invariants after every step.",
        discussion: """
            Each seed is one schedule: calls started, frames sent in and out of order, resends and \
            conflicting resends, rate limits, a full ledger queue, commits whose reply is lost, \
            data errors, registration outages, dropped connections and reconnects to any node, \
            node crashes, limit changes, budget grants answered, refused, failed or applied with \
            their answer lost, ticks, and a UTC day and month rollover. No sockets, no \
            database, no real clock: the same seed replays the same run.

            Invariants: no acknowledged frame is missing from the ledger; acks never decrease; a \
            summary equals its call's stored events; an ended call stays ended; no admission is \
            bypassed; a live call over a limit with auto-cutoff is cut off; a user's committed day \
            and month spend stays within the limit but for a window of frames per live call and \
            one frame per node (N nodes never spend N budgets); a core never spends more than the \
            ledger holds for it. A violation prints the \
            seed, the step and the command that replays it, and exits 1.

            Examples:
              voicemeter-sim simulate --seeds 500
              voicemeter-sim simulate --seed 1234 --steps 3000 --trace
            """
    )

    @Option(help: "Seeds to run, from --first-seed on.") var seeds = 100
    @Option(name: .customLong("first-seed"), help: "The first seed of --seeds.") var firstSeed: UInt64 = 1
    @Option(help: "Run this one seed only.") var seed: UInt64?
    @Option(help: "Random steps per seed before the run settles and is checked at rest.") var steps = 2_000
    @Option(help: "Random seeds to add to the run (printed, so a failure can be replayed).") var random = 0
    @Flag(help: "Print every input each node handles (with --seed).") var trace = false

    func validate() throws {
        guard seeds >= 1, steps >= 1, random >= 0 else { throw ValidationError("--seeds and --steps must be at least 1, --random at least 0") }
        if trace, seed == nil { throw ValidationError("--trace goes with --seed: one run's trace is long enough") }
    }

    func run() throws {
        var list = seed.map { [$0] } ?? Array(firstSeed..<(firstSeed + UInt64(seeds)))
        if seed == nil && random > 0 {
            let extra = (0..<random).map { _ in UInt64.random(in: 1_000_000...UInt64(Int64.max)) }
            print("random seeds: \(extra.map(String.init).joined(separator: " "))")
            list += extra
        }
        let started = ContinuousClock.now
        var total = CoreSimulationStats()
        for seed in list {
            var simulation = CoreSimulation(CoreSimulationOptions(seed: seed, steps: steps))
            if trace { simulation.trace = { print($0) } }
            if let violation = simulation.run() {
                print("FAILED \(violation)")
                throw ExitCode.failure
            }
            total.add(simulation.stats)
        }
        let elapsed = ContinuousClock.now - started
        print("""
            \(list.count) seeds × \(steps) steps: every invariant held (\(elapsed.formatted(.units(allowed: [.seconds], fractionalPart: .show(length: 1)))))
              frames stored \(total.framesStored), calls summarized \(total.callsSummarized), rejected \(total.callsRejected), cutoffs sent \(total.cutoffs)
              rate limited \(total.rateLimited), overloaded \(total.overloaded), conflicts at commit \(total.conflictsAtCommit), intrusions \(total.intrusions)
              reconnects \(total.reconnects), node crashes \(total.crashes), limit changes \(total.limitChanges)
              budget grants answered \(total.grantsAnswered), failed \(total.grantsFailed), lease renewals \(total.renewals)
            """)
    }
}
