import Testing

@testable import CanopyCore

@Suite("data store paths")
struct DataPathTests {
    @Test("paths normalize to absolute, clean forms", arguments: [("a//b/./c", "/a/b/c"), ("/", "/"), ("", "/"), ("/x/", "/x")])
    func normalize(raw: String, clean: String) {
        #expect(DataPath.normalize(raw) == clean)
    }

    @Test("names over 255 bytes, NUL bytes, paths over 4096 bytes and climbing above the root are refused")
    func refused() {
        #expect(DataPath.normalize("/" + String(repeating: "a", count: 256)) == nil)
        #expect(DataPath.normalize("/" + String(repeating: "é", count: 128)) == nil)
        #expect(DataPath.normalize("/a\u{0}b") == nil)
        #expect(DataPath.normalize("/" + Array(repeating: "abcdefgh", count: 500).joined(separator: "/")) == nil)
        #expect(DataPath.normalize("/a/../../b") == nil)
        // The limits themselves are fine.
        #expect(DataPath.normalize("/" + String(repeating: "a", count: 255)) != nil)
        #expect(DataPath.normalize("/" + String(repeating: "é", count: 127)) != nil)
    }
}

@Suite("resource arithmetic")
struct ResourceArithmeticTests {
    @Test("a per-task request times a task count saturates instead of trapping")
    func saturates() {
        #expect(Resources(cpuMillis: 2, memoryMiB: 3, gpus: 1).times(4) == Resources(cpuMillis: 8, memoryMiB: 12, gpus: 4))
        let huge = Resources(cpuMillis: Int.max / 2, memoryMiB: Int.max, gpus: 1).times(1024)
        #expect(huge.cpuMillis == Int.max && huge.memoryMiB == Int.max && huge.gpus == 1024)
    }
}

@Suite("hex text")
struct HexTests {
    @Test("two lowercase digits a byte, as %02x gives them")
    func encode() {
        #expect(Hex.encode([0, 15, 16, 171, 255]) == "000f10abff")
        #expect(Hex.encode([UInt8]()) == "")
        let bytes = (0...255).map(UInt8.init)
        #expect(Hex.encode(bytes) == bytes.map { String(format: "%02x", $0) }.joined())
    }
}
