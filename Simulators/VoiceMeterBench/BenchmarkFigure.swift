/// One measured figure with its target, as every benchmark prints it and `all` collects it.
struct BenchmarkFigure {
    var name: String
    var value: String
    /// What it must reach, in words (`≥ 0.7× the limit`); `nil` for context figures.
    var target: String?
    var passed: Bool?

    init(_ name: String, _ value: String, target: String? = nil, passed: Bool? = nil) {
        self.name = name
        self.value = value
        self.target = target
        self.passed = passed
    }

    /// The figures as aligned lines: name, value, target and PASS/MISS.
    static func render(_ figures: [BenchmarkFigure]) -> String {
        let nameWidth = figures.map(\.name.count).max() ?? 0
        let valueWidth = figures.map(\.value.count).max() ?? 0
        return figures.map { figure in
            var line = "  " + figure.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                + figure.value.padding(toLength: valueWidth, withPad: " ", startingAt: 0)
            if let target = figure.target, let passed = figure.passed { line += "  target \(target): \(passed ? "PASS" : "MISS")" }
            return line
        }.joined(separator: "\n")
    }
}
