// Fuzzes CanopyCore's quantities and durations: parseCPU, parseMemory and parseDuration on any text, what they
// accept formatting and parsing back to the same value, and Resources decoded from JSON.
import CanopyCore
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let text = String(decoding: bytes, as: UTF8.self)
    if let cpu = Quantity.parseCPU(text) {
        guard cpu >= 0, Quantity.parseCPU(Quantity.formatCPU(cpu)) == cpu else { fatalError("CPU \(text) -> \(cpu)") }
    }
    if let mib = Quantity.parseMemory(text) {
        guard mib >= 0, Quantity.parseMemory(Quantity.formatMemory(mib)) == mib else { fatalError("memory \(text) -> \(mib)") }
    }
    if let seconds = Quantity.parseDuration(text) {
        guard seconds >= 0, Quantity.parseDuration(Quantity.formatDuration(seconds)) == seconds else { fatalError("duration \(text) -> \(seconds)") }
    }
    // The same text as a JSON document and as the value of each field.
    _ = try? JSONDecoder().decode(Resources.self, from: Data(bytes))
    for key in ["cpu", "memory", "gpus"] {
        _ = try? JSONDecoder().decode(Resources.self, from: Data("{\"\(key)\": ".utf8) + Data(bytes) + Data("}".utf8))
    }
    return 0
}
