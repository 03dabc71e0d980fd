extension RandomAccessCollection {
    /// The value at quantile `q` (0…1) of these sorted values by nearest rank (`q` = 1: the
    /// largest); `nil` when empty.
    public func nearestRank(_ q: Double) -> Element? {
        guard !isEmpty else { return nil }
        return self[index(startIndex, offsetBy: Swift.min(count - 1, Int(Double(count) * q)))]
    }
}
