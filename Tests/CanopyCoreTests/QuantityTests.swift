import Foundation
import Testing

@testable import CanopyCore

@Suite("quantities, ids and phases")
struct QuantityTests {
    @Test("CPU quantities parse as millicores", arguments: [("2", 2000), ("0.5", 500), ("500m", 500), ("1.25", 1250), (" 3 ", 3000)])
    func cpu(text: String, millis: Int) {
        #expect(Quantity.parseCPU(text) == millis)
    }

    @Test("bad CPU quantities are refused", arguments: ["", "abc", "-1", "1e400", "m", "-5m", "nan"])
    func badCPU(text: String) {
        #expect(Quantity.parseCPU(text) == nil)
    }

    @Test("memory quantities parse as MiB, rounded up", arguments: [("512Mi", 512), ("2Gi", 2048), ("1G", 954), ("1048576", 1), ("1.5Gi", 1536), ("100Ki", 1), ("1GB", 954)])
    func memory(text: String, mib: Int) {
        #expect(Quantity.parseMemory(text) == mib)
    }

    @Test("bad memory quantities are refused, the ambiguous lowercase m and g among them", arguments: ["", "lots", "-1Gi", "1Xi", "1e30", "512m", "512mb", "2g", "2gb"])
    func badMemory(text: String) {
        #expect(Quantity.parseMemory(text) == nil)
    }

    @Test("durations parse and format", arguments: [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172_800), ("45", 45)])
    func durations(text: String, seconds: Int) {
        #expect(Quantity.parseDuration(text) == seconds)
        #expect(Quantity.parseDuration(Quantity.formatDuration(seconds)) == seconds)
    }

    @Test("bad durations are refused", arguments: ["", "1x", "h", "1h30", "-5", "99999999999999999999d"])
    func badDurations(text: String) {
        #expect(Quantity.parseDuration(text) == nil)
    }

    @Test(
        "quantities from outside never trap: overflow, huge and non-finite values are parse failures",
        arguments: [
            "9223372036854775807Gi", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e400", "-1e400", "1e18", "1e15Ti",
            "999999999999Ti", "9223372036854775807m", "1000000000m", "1000000", "nan", "NaN", "inf", "-inf", "infinity", "0x1p1000", "1e-400Gi",
            "99999999999999999999999999999999999999999999Ki", String(repeating: "9", count: 5000), "1.5.5Gi", "Gi", "i", "1 Gi", "٣Gi", "٣",
        ])
    func hostileQuantities(text: String) {
        // Only the answer's shape is checked here; the point is that nothing traps.
        if let cpu = Quantity.parseCPU(text) { #expect(cpu >= 0 && cpu < Quantity.maxCPUs * 1000) }
        if let mib = Quantity.parseMemory(text) { #expect(mib >= 0 && mib < Quantity.maxMemoryMiB) }
        if let seconds = Quantity.parseDuration(text) { #expect(seconds >= 0) }
    }

    @Test("CPU quantities at and past the bound")
    func cpuBounds() {
        #expect(Quantity.parseCPU("999999") == 999_999_000)
        #expect(Quantity.parseCPU("999999999m") == 999_999_999)
        #expect(Quantity.parseCPU("1000000000m") == nil)
        #expect(Quantity.parseCPU("9223372036854775807m") == nil)
        #expect(Quantity.parseCPU("1000000") == nil)
        #expect(Quantity.parseCPU("0") == 0)
        #expect(Quantity.parseCPU("0.0004") == 0)
    }

    @Test("memory quantities at and past the bound")
    func memoryBounds() {
        #expect(Quantity.parseMemory("9223372036854775807Gi") == nil)
        #expect(Quantity.parseMemory("1048575Ti") == Quantity.maxMemoryMiB - 1_048_576)
        #expect(Quantity.parseMemory("1048576Ti") == nil)
        #expect(Quantity.parseMemory("\(Quantity.maxMemoryMiB - 1)Mi") == Quantity.maxMemoryMiB - 1)
        #expect(Quantity.parseMemory("\(Quantity.maxMemoryMiB)Mi") == nil)
        #expect(Quantity.parseMemory("5e17") == 476_837_158_204)
        #expect(Quantity.parseMemory("1e19") == nil)
        #expect(Quantity.parseMemory("1e-400Gi") == 0)
        #expect(Quantity.parseMemory("0x10Mi") == 16)
        #expect(Quantity.parseMemory("-0") == 0)
    }

    @Test("what the formatters write always parses back to the same value, at the bounds too")
    func formatRoundTrip() {
        for cpu in [0, 1, 999, 1000, 1500, Quantity.maxCPUs * 1000 - 1, Quantity.maxCPUs * 1000 - 1000] {
            #expect(Quantity.parseCPU(Quantity.formatCPU(cpu)) == cpu)
        }
        for mib in [0, 1, 1023, 1024, 1536, Quantity.maxMemoryMiB - 1, Quantity.maxMemoryMiB - 1024] {
            #expect(Quantity.parseMemory(Quantity.formatMemory(mib)) == mib)
        }
        // 999999.9995 CPUs round up to the bound itself, which is refused rather than written as "1000000".
        #expect(Quantity.parseCPU("999999.9995") == nil)
        #expect(Quantity.cpuMillis(fromCPUs: 1e300) == nil)
        #expect(Quantity.memoryMiB(fromBytes: .infinity) == nil)
        #expect(Quantity.memoryMiB(fromBytes: .nan) == nil)
        #expect(Quantity.memoryMiB(fromBytes: -5) == nil)
    }

    @Test(
        "durations: every part and the sum are checked for overflow",
        arguments: [
            ("9223372036854775807", 9_223_372_036_854_775_807), ("9223372036854775807s", 9_223_372_036_854_775_807), ("9223372036854775808", nil),
            ("153722867280912930m", 9_223_372_036_854_775_800), ("153722867280912931m", nil), ("106751991167300d", 9_223_372_036_854_720_000),
            ("106751991167301d", nil), ("9223372036854775807s1s", nil), ("9223372036854775000s807s", 9_223_372_036_854_775_807),
            ("9223372036854775000s808s", nil), ("1h30m", 5400), ("0s", 0), ("1e400", nil), ("1.5h", nil), ("-1s", nil), ("1h-1s", nil), ("٣s", nil),
            ("1ｓ", nil), ("s1", nil),
        ] as [(String, Int?)])
    func durationOverflow(text: String, seconds: Int?) {
        #expect(Quantity.parseDuration(text) == seconds)
    }

    @Test("ids are base62 of at most 22 characters and distinct")
    func ids() {
        let ids = (0..<1000).map { _ in IDGenerator.random() }
        #expect(Set(ids).count == 1000)
        #expect(ids.allSatisfy { Base62.isValid($0) && $0.count <= 22 })
        #expect(Base62.encode(.max, .max).count == 22)
        #expect(Base62.encode(0, 0) == "0")
        #expect(Base62.encode(0, 61) == "z")
        #expect(Base62.encode(0, 62) == "10")
    }

    @Test("the phase machine allows only forward moves")
    func phases() {
        #expect(Phase.pending.canMove(to: .starting))
        #expect(Phase.running.canMove(to: .succeeded))
        #expect(!Phase.succeeded.canMove(to: .running))
        #expect(!Phase.pending.canMove(to: .running))
        #expect(Phase.stopped.canMove(to: .pending))
        #expect(Phase.allCases.filter(\.isTerminal) == [.succeeded, .failed, .cancelled])
        var w = Workload(id: "a", tenant: "t", owner: "u", spec: WorkloadSpec(command: ["true"]), createdAt: Date())
        let skipped = w.move(to: .running, at: Date())
        #expect(!skipped)
        let started = w.move(to: .starting, at: Date())
        let running = w.move(to: .running, at: Date())
        #expect(started && running && w.startedAt != nil)
        let failed = w.move(to: .failed, reason: Reason(.nonZeroExit, "x"), at: Date())
        #expect(failed && w.finishedAt != nil)
    }

    @Test("resources decode from human forms and encode back to them")
    func resources() throws {
        let r = try JSONDecoder().decode(Resources.self, from: Data(#"{"cpu": 0.5, "memory": "2Gi", "gpus": 1, "gpuModel": "T4"}"#.utf8))
        #expect(r == Resources(cpuMillis: 500, memoryMiB: 2048, gpus: 1, gpuModel: "T4"))
        let s = try JSONDecoder().decode(Resources.self, from: Data(#"{"cpu": "250m", "memory": 1073741824}"#.utf8))
        #expect(s.cpuMillis == 250 && s.memoryMiB == 1024 && s.gpus == 0)
        let back = try JSONDecoder().decode(Resources.self, from: try JSONEncoder().encode(r))
        #expect(back == r)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Resources.self, from: Data(#"{"cpu": "fast"}"#.utf8)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Resources.self, from: Data(#"{"memory": -5}"#.utf8)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Resources.self, from: Data(#"{"cpu": true}"#.utf8)) }
    }
}
