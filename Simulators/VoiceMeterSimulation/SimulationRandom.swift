import VoiceMeterDomain

/// The simulator's random source: seeded, so `--seed` reproduces a run's calls exactly.
public typealias SimulationRandom = SeededRandom

extension SeededRandom {
    /// A value within `center ± spread`.
    mutating func around(_ center: Int, spread: Int) -> Int {
        spread == 0 ? center : Int.random(in: (center - spread)...(center + spread), using: &self)
    }

    /// True with probability `perMille`/1000.
    mutating func chance(perMille: Int) -> Bool {
        Int.random(in: 0..<1_000, using: &self) < perMille
    }
}
