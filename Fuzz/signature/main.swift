// Fuzzes SignatureV2.verify (Data Forest's signature v2 headers) with arbitrary header bytes. Built by
// scripts/fuzz.sh with SignatureV2.swift compiled in. Input: 8 bytes of the server's clock (little-endian
// epoch milliseconds), then timestamp, access key, signature, URI and method separated by NUL bytes.
import CanopyCore
import Foundation

let principal = Principal(user: "fuzz", tenant: "fuzz", role: .user)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    var now: Int64 = 1_658_898_041_497
    var rest = bytes[...]
    if size >= 8 {
        now = 0
        for b in bytes.prefix(8).reversed() { now = now << 8 | Int64(b) }
        rest = bytes.dropFirst(8)
    }
    // Header values arrive as Strings; bytes that are not UTF-8 are repaired, as HTTP parsing would.
    var fields = rest.split(separator: 0, maxSplits: 4, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    let present = fields.count
    while fields.count < 5 { fields.append("") }
    let result = SignatureV2.verify(
        method: fields[4].isEmpty ? "POST" : fields[4], uri: fields[3], timestamp: present > 0 ? fields[0] : nil, accessKey: present > 1 ? fields[1] : nil,
        signature: present > 2 ? fields[2] : nil, nowMillis: now, lookup: { $0 == "KEY" ? (principal, "secret") : nil })
    if case .success = result {
        // Accepted only with the right key, the right signature and a timestamp inside the window.
        guard fields[1] == "KEY", let ts = Int64(fields[0]), abs(Double(ts) - Double(now)) <= Double(SignatureV2.window) + 4096 else {
            fatalError("accepted \(fields)")
        }
        let expected = SignatureV2.sign(
            method: fields[4].isEmpty ? "POST" : fields[4], uri: fields[3], timestamp: fields[0], accessKey: "KEY", secret: "secret")
        guard Data(base64Encoded: fields[2]) == Data(base64Encoded: expected) else { fatalError("accepted a wrong signature: \(fields)") }
    }
    if let ts = Int64(fields[0]) {
        let inside = SignatureV2.isWithinWindow(ts, of: now)
        let distance = abs(Double(ts) - Double(now))
        // Doubles round near Int64's ends; only a clear disagreement is a bug.
        if inside && distance > Double(SignatureV2.window) + 4096 || !inside && distance < Double(SignatureV2.window) - 4096 {
            fatalError("window wrong for \(ts) at \(now)")
        }
    }
    return 0
}
