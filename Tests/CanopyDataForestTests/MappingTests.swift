import CanopyCore
import CanopyHTTP
import Foundation
import Testing

@testable import CanopyDataForest

/// The fixtures folder beside the test targets.
let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/dataforest")

func fixture(_ name: String) throws -> Data { try Data(contentsOf: fixtures.appendingPathComponent(name)) }

@Suite("Data Forest mappings, table by table")
struct MappingTests {
    @Test(
        "phases map onto YARN state and finalStatus",
        arguments: [
            (Phase.pending, "ACCEPTED", "UNDEFINED"), (.starting, "RUNNING", "UNDEFINED"), (.running, "RUNNING", "UNDEFINED"),
            (.stopping, "RUNNING", "UNDEFINED"), (.succeeded, "FINISHED", "SUCCEEDED"), (.failed, "FAILED", "FAILED"),
            (.cancelled, "KILLED", "KILLED"), (.stopped, "KILLED", "KILLED"),
        ])
    func yarn(phase: Phase, state: String, final: String) {
        #expect(DataForestMapping.yarn(phase) == (state, final))
    }

    @Test("container status follows YARN's ContainerState")
    func containers() {
        #expect(DataForestMapping.containerStatus(.pending) == "NEW")
        #expect(DataForestMapping.containerStatus(.running) == "RUNNING")
        #expect(DataForestMapping.containerStatus(.failed) == "COMPLETE")
    }

    @Test(
        "workspace names: 15 characters, lowercase first, single hyphens, no trailing hyphen",
        arguments: [
            ("api-test", true), ("a", true), ("abcdefghijklmno", true), ("abcdefghijklmnop", false), ("Api", false), ("1abc", false),
            ("a--b", false), ("ab-", false), ("a_b", false), ("", false), ("a-b-c9", true), ("한글", false),
        ])
    func workspaceNames(name: String, valid: Bool) {
        #expect((DataForestMapping.workspaceNameProblem(name) == nil) == valid)
    }

    @Test("name prefixes: 2 to 8 characters, the vendor's **** included")
    func prefixes() throws {
        #expect(DataForestMapping.namePrefixProblem("****") == nil)
        #expect(DataForestMapping.namePrefixProblem("df") == nil)
        #expect(DataForestMapping.namePrefixProblem("d") != nil)
        #expect(DataForestMapping.namePrefixProblem("abcdefghi") != nil)
        #expect(DataForestMapping.namePrefixProblem("a b") != nil)
        let name = DataForestMapping.appName(prefix: "****")
        #expect(try Regex("^\\*{4}-[a-z0-9]{4}-[a-z0-9]{4}$").wholeMatch(in: name) != nil)
    }

    @Test("an image outside the vendor's pattern answers exactly as seed 001's error example")
    func image() throws {
        let golden = try JSONDecoder().decode([String: JSONValue].self, from: fixture("create-workspace-bad-image-response.json"))
        do {
            try DataForestMapping.checkImage("tensorflow/r2.3.1-py3", field: "configuration.docker.image")
            Issue.record("accepted a bad image")
        } catch let e as DataForestError {
            #expect(e.status == .badRequest)
            #expect(JSONValue.string(e.message) == golden["message"])
        }
        for good in ["tensorflow:r2.3.1-py3", "dataforest/pytorch:1.13.1-cuda11.7", "a:b"] {
            #expect(throws: Never.self) { try DataForestMapping.checkImage(good, field: "x") }
        }
        for bad in ["Tensorflow:1", "tf", "tf:", ":1", "dataforest/:1", "a:\(String(repeating: "1", count: 21))", "other/tf:1"] {
            #expect(throws: DataForestError.self) { try DataForestMapping.checkImage(bad, field: "x") }
        }
    }

    @Test("timestamps carry the vendor's offset; the zero value is the one in seed 000")
    func timestamps() {
        let seoul = TimeZone(identifier: "Asia/Seoul")!
        #expect(DataForestMapping.timestamp(nil, zone: seoul) == "1970-01-01T09:00:00+09:00")
        let started = Date(timeIntervalSince1970: 1_659_319_713.086)  // 2022-08-01T02:08:33.086Z
        #expect(DataForestMapping.timestamp(started, zone: seoul) == "2022-08-01T11:08:33.086+09:00")
        #expect(DataForestMapping.timestamp(nil, zone: .gmt) == "1970-01-01T00:00:00+00:00")
    }

    @Test("account ids are stable base62 UUIDs of at most 22 characters, one per tenant")
    func accounts() {
        let a = DataForestMapping.accountID(tenant: "default")
        #expect(a == DataForestMapping.accountID(tenant: "default"))
        #expect(a != DataForestMapping.accountID(tenant: "other"))
        #expect(Base62.isValid(a))
    }

    @Test("the request merges over the workspace configuration field by field")
    func merge() {
        let config = AiAppTypeSpec(
            docker: AiAppDocker(args: "--x", command: "ls", env: ["A": "1", "B": "2"], image: "tf:1", workdir: "/root/"), queueName: "batch",
            resource: AiAppResource(cpuCount: 2, gpuCount: 1, gpuModel: "T4", memoryMb: 2048))
        let request = SubmitAiAppRequest(docker: AiAppDocker(command: "python3 run.py", env: ["B": "3"]), resource: AiAppResource(memoryMb: 512))
        let m = DataForestMapping.merge(request, over: config)
        #expect(m.docker.command == "python3 run.py")
        #expect(m.docker.env == ["A": "1", "B": "3"])
        #expect(m.docker.image == "tf:1")
        #expect(m.resource == AiAppResource(cpuCount: 2, gpuCount: 1, gpuModel: "T4", memoryMb: 512))
        #expect(m.queue == "batch")
        #expect(DataForestMapping.commandLine(m.docker) == ["/bin/sh", "-c", "python3 run.py --x"])
    }

    @Test("resources: defaults, limits, and a GPU model only with GPUs")
    func resources() throws {
        let r = try DataForestMapping.resources(AiAppResource(cpuCount: 1, gpuCount: 0, gpuModel: "T4", memoryMb: 1024), field: "resource")
        #expect(r == Resources(cpuMillis: 1000, memoryMiB: 1024, gpus: 0, gpuModel: nil))
        #expect(try DataForestMapping.resources(AiAppResource(), field: "resource") == Resources(cpuMillis: 1000, memoryMiB: 1024))
        #expect(throws: DataForestError.self) { try DataForestMapping.resources(AiAppResource(gpuCount: 9), field: "resource") }
        #expect(throws: DataForestError.self) { try DataForestMapping.resources(AiAppResource(cpuCount: 0), field: "resource") }
        #expect(throws: DataForestError.self) { try DataForestMapping.resources(AiAppResource(memoryMb: -1), field: "resource") }
    }
}

@Suite("signature v2")
struct SignatureTests {
    static let secret = "test-secret-key-for-a-known-vector"
    static let principal = Principal(user: "u", tenant: "t", role: .user)

    func lookup(_ key: String) -> (principal: Principal, secret: String)? {
        key == "17F9A6E9F72BD92ED94B" ? (Self.principal, Self.secret) : nil
    }

    @Test("signatures match an independent HMAC-SHA256 (Python's hmac module) over METHOD URI, timestamp and key")
    func knownVectors() {
        #expect(
            SignatureV2.sign(method: "POST", uri: "/api/v2/aiapps/submit", timestamp: "1658898041497", accessKey: "17F9A6E9F72BD92ED94B", secret: Self.secret)
                == "0N+1IFuKflOTZizGbOHLtWv1foFoUxv4AUHwz7AgSA8=")
        #expect(
            SignatureV2.sign(
                method: "get", uri: "/api/v2/aiapps/x/containers/0/log?stream=stderr", timestamp: "1658898041497", accessKey: "17F9A6E9F72BD92ED94B",
                secret: Self.secret) == "O9REJBeKrTGM8kNsRWud1UWIEE6IcxjNtwAvZFwhzaA=")
    }

    @Test("verification: within 5 minutes, known key, right signature; a replay inside the window passes")
    func verify() {
        let ts: Int64 = 1_658_898_041_497
        let sig = "0N+1IFuKflOTZizGbOHLtWv1foFoUxv4AUHwz7AgSA8="
        func check(_ now: Int64, key: String = "17F9A6E9F72BD92ED94B", signature: String? = sig, uri: String = "/api/v2/aiapps/submit") -> Bool {
            if case .success = SignatureV2.verify(
                method: "POST", uri: uri, timestamp: String(ts), accessKey: key, signature: signature, nowMillis: now, lookup: lookup)
            {
                return true
            }
            return false
        }
        #expect(check(ts))
        #expect(check(ts + 1000))  // the same request again
        #expect(check(ts + 300_000))
        #expect(!check(ts + 300_001))
        #expect(!check(ts - 300_001))
        #expect(!check(ts, key: "UNKNOWN"))
        #expect(!check(ts, signature: nil))
        #expect(!check(ts, signature: "not base64!"))
        #expect(!check(ts, uri: "/api/v2/aiapps/kill"))
        #expect(!check(ts, signature: "1N+1IFuKflOTZizGbOHLtWv1foFoUxv4AUHwz7AgSA8="))
    }

    @Test(
        "timestamps anywhere in Int64 are compared without overflow (the probe's -9223372036854775808 killed the server)",
        arguments: [Int64.min, .min + 1, .max, .max - 1, -1, 0])
    func extremeTimestamps(ts: Int64) {
        for now in [Int64.min, -1, 0, 1_658_898_041_497, .max] {
            // Doubles are exact enough here: the pairs are equal, next to each other, or far apart.
            #expect(SignatureV2.isWithinWindow(ts, of: now) == (abs(Double(ts) - Double(now)) <= 300_000), "\(ts) at \(now)")
            let result = SignatureV2.verify(
                method: "POST", uri: "/api/v2/accounts/getList", timestamp: String(ts), accessKey: "17F9A6E9F72BD92ED94B", signature: "x", nowMillis: now,
                lookup: lookup)
            if case .success = result { Issue.record("accepted \(ts) at \(now)") }
        }
        #expect(SignatureV2.isWithinWindow(.max, of: .max - 300_000))
        #expect(!SignatureV2.isWithinWindow(.max, of: .max - 300_001))
        #expect(!SignatureV2.isWithinWindow(.min, of: .max))
        #expect(!SignatureV2.isWithinWindow(.max, of: .min))
        #expect(SignatureV2.isWithinWindow(.min, of: .min + 1))
    }

    @Test(
        "header bytes that are not a timestamp are refused with the gateway's words",
        arguments: ["-9223372036854775809", "99999999999999999999", "1e3", " 1", "", "０"])
    func badTimestamps(ts: String) {
        let result = SignatureV2.verify(
            method: "POST", uri: "/", timestamp: ts, accessKey: "17F9A6E9F72BD92ED94B", signature: "x", nowMillis: 0, lookup: lookup)
        #expect(result == .failure(SignatureV2.Failure(details: "x-ncp-apigw-timestamp must be epoch milliseconds")))
        #expect(DataForestError.authentication("x").status == .unauthorized)
    }
}
