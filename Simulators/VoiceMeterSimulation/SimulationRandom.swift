/// SplitMix64: a small, fast generator whose whole sequence follows from one seed, so `--seed`
/// reproduces a run's calls exactly (the system generator cannot be seeded).
public struct SimulationRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    /// A value within `center ± spread`.
    mutating func around(_ center: Int, spread: Int) -> Int {
        spread == 0 ? center : Int.random(in: (center - spread)...(center + spread), using: &self)
    }

    /// True with probability `perMille`/1000.
    mutating func chance(perMille: Int) -> Bool {
        Int.random(in: 0..<1_000, using: &self) < perMille
    }
}
