/// What one task of a workload asks for. Encoded in its human form:
/// `{"cpu": "500m", "memory": "512Mi", "gpus": 1, "gpuModel": "T4"}`.
public struct Resources: Sendable, Hashable {
    /// CPU in millicores.
    public var cpuMillis: Int
    /// Memory in MiB.
    public var memoryMiB: Int
    /// Whole GPUs.
    public var gpus: Int
    /// A GPU model the GPUs must be (matched case-insensitively as a substring of the device's name), or nil for any.
    public var gpuModel: String?

    /// The defaults for a task that asks for nothing: one CPU and 1 GiB.
    public static let defaultCPUMillis = 1000
    /// Default memory in MiB.
    public static let defaultMemoryMiB = 1024

    /// Creates a request.
    public init(cpuMillis: Int = Resources.defaultCPUMillis, memoryMiB: Int = Resources.defaultMemoryMiB, gpus: Int = 0, gpuModel: String? = nil) {
        self.cpuMillis = cpuMillis
        self.memoryMiB = memoryMiB
        self.gpus = gpus
        self.gpuModel = gpuModel
    }

    /// Whole CPUs, rounded up (what backends and vendors that count whole CPUs are told), without the `+ 999` that
    /// would overflow near `Int.max`.
    public var wholeCPUs: Int {
        let (q, r) = cpuMillis.quotientAndRemainder(dividingBy: 1000)
        return r > 0 ? q + 1 : q
    }

    /// Multiplies a per-task request by a task count, saturating at Int.max: the factors come from requests and
    /// node reports, and a product that does not fit is "more than any node has", not a trap.
    public func times(_ n: Int) -> Resources {
        func product(_ a: Int) -> Int {
            let (p, overflow) = a.multipliedReportingOverflow(by: n)
            return overflow ? ((a < 0) != (n < 0) ? Int.min : Int.max) : p
        }
        return Resources(cpuMillis: product(cpuMillis), memoryMiB: product(memoryMiB), gpus: product(gpus), gpuModel: gpuModel)
    }
}

extension Resources: Codable {
    enum CodingKeys: String, CodingKey { case cpu, memory, gpus, gpuModel }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cpuMillis = try c.decodeQuantity(.cpu, default: Resources.defaultCPUMillis, parse: Quantity.parseCPU, numeric: Quantity.cpuMillis(fromCPUs:),
                                         expected: "a number of CPUs such as 2, 0.5 or \"500m\"")
        memoryMiB = try c.decodeQuantity(.memory, default: Resources.defaultMemoryMiB, parse: Quantity.parseMemory,
                                         numeric: Quantity.memoryMiB(fromBytes:),
                                         expected: "a size such as \"512Mi\" or \"2Gi\", or a number of bytes")
        gpus = try c.decodeIfPresent(Int.self, forKey: .gpus) ?? 0
        gpuModel = try c.decodeIfPresent(String.self, forKey: .gpuModel)
        if gpuModel?.isEmpty == true { gpuModel = nil }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Quantity.formatCPU(cpuMillis), forKey: .cpu)
        try c.encode(Quantity.formatMemory(memoryMiB), forKey: .memory)
        try c.encode(gpus, forKey: .gpus)
        try c.encodeIfPresent(gpuModel, forKey: .gpuModel)
    }
}

extension KeyedDecodingContainer {
    /// Decodes a quantity given either as a string in its human form or as a number.
    /// Both forms go through the same bounded parsing, so a number from outside cannot trap on its way to an Int.
    func decodeQuantity(_ key: Key, default value: Int, parse: (String) -> Int?, numeric: (Double) -> Int?, expected: String) throws -> Int {
        guard contains(key), try !decodeNil(forKey: key) else { return value }
        if let text = try? decode(String.self, forKey: key) {
            guard let v = parse(text) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\"\(text)\" is not \(expected)")
            }
            return v
        }
        guard let number = try? decode(Double.self, forKey: key) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "expected \(expected)")
        }
        guard let v = numeric(number) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(number) is not \(expected)")
        }
        return v
    }
}
