import CanopyCore
import CanopyHTTP
import CanopySQLite
import CanopyServices
import CanopyTesting
import Foundation
import Testing

@testable import CanopySCNet

let scnetFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/scnet")

func seedBody() throws -> JSONValue {
    let data = try Data(contentsOf: scnetFixtures.appendingPathComponent("create-seed.json"))
    return try #require(try JSONValue.parse(data))
}

func with(_ body: JSONValue, _ key: String, _ value: JSONValue?) -> JSONValue {
    guard case .object(var o) = body else { return body }
    o[key] = value
    return .object(o)
}

@Suite("SCNet: states, times, leases and create bodies, table by table")
struct SCNetMappingTests {
    @Test("every Canopy phase has one SCNet state, and a list's status filter finds the phases back")
    func states() {
        let table: [(Phase, String)] = [
            (.pending, "Waiting"), (.starting, "Deploying"), (.running, "Running"), (.stopping, "Running"), (.stopped, "Terminated"),
            (.succeeded, "Completed"), (.failed, "Failed"), (.cancelled, "Terminated"),
        ]
        for (phase, state) in table {
            #expect(SCNetMapping.state(phase) == state, "\(phase)")
            #expect(SCNetMapping.phases(forState: state)?.contains(phase) == true, "\(state)")
        }
        #expect(SCNetMapping.phases(forState: "terminated") == [.stopped, .cancelled])
        #expect(SCNetMapping.phases(forState: "Stopped") == nil)
    }

    @Test("timeoutLimit: HH:MM:SS or unlimited; anything else is refused")
    func leases() {
        let table: [(String, Lease?)] = [
            ("01:00:00", .seconds(3600)), ("00:00:01", .seconds(1)), ("100:30:15", .seconds(100 * 3600 + 30 * 60 + 15)), ("unlimited", .unlimited),
            ("UNLIMITED", .unlimited), ("00:00:00", nil), ("1:60:00", nil), ("01:00", nil), ("a:b:c", nil), ("-1:00:00", nil), ("", nil),
            ("99999999:00:00", nil), ("87840:00:00", .seconds(87840 * 3600)), ("87841:00:00", nil), ("01:00:00:00", nil), ("١:00:00", nil),
        ]
        for (text, lease) in table { #expect(SCNetMapping.lease(text) == lease, "\(text)") }
    }

    @Test("times in the vendor's format and zone; durations and resource specs as the detail page shows them")
    func formats() {
        let date = Date(timeIntervalSince1970: 1_652_268_634)  // 2022-05-11 11:30:34 UTC
        #expect(SCNetMapping.time(date, zone: TimeZone(identifier: "Asia/Shanghai")!) == "2022-05-11 19:30:34")
        #expect(SCNetMapping.time(date, zone: .gmt) == "2022-05-11 11:30:34")
        #expect(SCNetMapping.time(nil, zone: .gmt) == "")
        #expect(SCNetMapping.clock(3661) == "01:01:01")
        #expect(SCNetMapping.clock(100 * 3600) == "100:00:00")
        #expect(SCNetMapping.clock(-5) == "00:00:00")
        #expect(SCNetMapping.resourceSpec(cpuMillis: 3000, gpus: 1, memoryMiB: 15360) == "3 核心; 1 加速器; 15.0G 内存")
        #expect(SCNetMapping.resourceSpec(cpuMillis: 1500, gpus: 0, memoryMiB: 512) == "1.5 核心; 0 加速器; 0.5G 内存")
    }

    @Test("the seed's create body reads as written: containerPort as a string, the data mount, unlimited")
    func seedCreateBody() throws {
        let r = try InstanceRequest.parse(try seedBody())
        #expect(r.name == "Instances_2205113838" && r.taskType == "ssh" && r.acceleratorType == "gpu")
        #expect(r.version == "jupyter:4.4-py3.7-cpu" && r.imagePath == "10.0.35.26:5000/gpu/admin/base/jupyter:4.4-py3.7-cpu")
        #expect(r.lease == .unlimited && r.timeoutLimit == "unlimited")
        #expect(r.taskNumber == 1 && r.resourceGroup == "TeslaM40" && !r.useStartScript && r.startScriptActionScope == "all")
        #expect(r.cpuNumber == 3 && r.ramSize == 15360 && r.gpuNumber == 1)
        #expect(r.mounts == [.init(sourcePath: "/public1/home/lizb0530d/test_mount", targetPath: "/mnt/test_mount", type: "data")])
        #expect(r.ports == [.init(containerPort: 18888, protocolType: "HTTP")])
        // The documented int form too.
        let asInt = with(try seedBody(), "containerPortInfoList", .array([.object(["protocolType": .string("SSH"), "containerPort": .int(22)])]))
        #expect(try InstanceRequest.parse(asInt).ports == [.init(containerPort: 22, protocolType: "SSH")])
    }

    @Test("every required field missing in turn is 10003 naming it; wrong types and absurd values are 10004 naming the field")
    func badBodies() throws {
        let required = [
            "acceleratorType", "cpuNumber", "gpuNumber", "instanceServiceName", "ramSize", "resourceGroup", "taskNumber", "taskType", "timeoutLimit",
            "useStartScript", "version", "imagePath",
        ]
        let seed = try seedBody()
        for key in required {
            do throws(SCNetError) {
                _ = try InstanceRequest.parse(with(seed, key, nil))
                Issue.record("\(key) missing was accepted")
            } catch {
                #expect(error.code == "10003" && error.msg.contains(key), "\(key): \(error)")
            }
        }
        let bad: [(String, JSONValue, String)] = [
            ("cpuNumber", .string("three"), "cpuNumber"), ("cpuNumber", .int(0), "cpuNumber"), ("cpuNumber", .int(1 << 40), "cpuNumber"),
            ("cpuNumber", .double(1.5), "cpuNumber"), ("ramSize", .int(-1), "ramSize"), ("gpuNumber", .int(100_000), "gpuNumber"),
            ("taskNumber", .int(0), "taskNumber"), ("taskNumber", .int(5000), "taskNumber"), ("taskType", .string("vnc"), "taskType"),
            ("acceleratorType", .string("tpu"), "acceleratorType"), ("timeoutLimit", .string("forever"), "timeoutLimit"),
            ("instanceServiceName", .int(5), "instanceServiceName"), ("instanceServiceName", .string(" "), "instanceServiceName"),
            ("instanceServiceName", .string("a\u{7}b"), "instanceServiceName"), ("useStartScript", .string("maybe"), "useStartScript"),
            ("containerPortInfoList", .string("18888"), "containerPortInfoList"),
            (
                "containerPortInfoList", .array([.object(["protocolType": .string("HTTP"), "containerPort": .string("99999")])]),
                "containerPortInfoList[0].containerPort"
            ),
            ("containerPortInfoList", .array([.object(["protocolType": .string("FTP"), "containerPort": .int(21)])]), "containerPortInfoList[0].protocolType"),
            (
                "containerPortInfoList", .array([.object(["protocolType": .string("HTTP"), "containerPort": .bool(true)])]),
                "containerPortInfoList[0].containerPort"
            ),
            ("mountInfoList", .array([.object(["sourcePath": .string("/a"), "targetPath": .string("/b"), "type": .string("nfs")])]), "mountInfoList[0].type"),
            ("resourceGroup", .string(""), "resourceGroup"),
        ]
        for (key, value, field) in bad {
            do throws(SCNetError) {
                _ = try InstanceRequest.parse(with(seed, key, value))
                Issue.record("\(key)=\(value) was accepted")
            } catch {
                #expect(error.code == "10004" && error.msg.contains(field), "\(key)=\(value): \(error)")
            }
        }
        // A start script is required once useStartScript is true; acceleratorType cpu takes no GPUs.
        do throws(SCNetError) {
            _ = try InstanceRequest.parse(with(with(seed, "useStartScript", .bool(true)), "startScriptContent", .string("  ")))
            Issue.record("an empty start script was accepted")
        } catch { #expect(error.code == "10003" && error.msg.contains("startScriptContent")) }
        do throws(SCNetError) {
            _ = try InstanceRequest.parse(with(seed, "acceleratorType", .string("cpu")))
            Issue.record("cpu with a GPU was accepted")
        } catch { #expect(error.code == "10004" && error.msg.contains("gpuNumber")) }
    }

    @Test("the create body's task bound is Canopy's")
    func taskBound() { #expect(InstanceRequest.maxTasks == WorkloadService.Limits.maxTasks) }

    @Test("a start script runs in a subshell before the service, on task 0 only for header")
    func startScripts() {
        #expect(InstanceRequest.command(service: ["jupyter", "lab"], script: nil, scope: "all") == ["jupyter", "lab"])
        let all = InstanceRequest.command(service: ["svc"], script: "pip install x", scope: "all")
        #expect(all == ["sh", "-c", "(\npip install x\n)\nexec \"$@\"", "sh", "svc"])
        let header = InstanceRequest.command(service: ["svc"], script: "echo hi", scope: "header")
        #expect(header[2].contains("CANOPY_TASK_INDEX") && header.last == "svc")
    }
}

@Suite("SCNet tokens: HS256 JWTs with the seed's claims")
struct SCNetTokenTests {
    let tokens = SCNetTokens(keyBytes: Data(repeating: 7, count: 32))
    let claims = SCNetClaims(
        computeUser: "alice", accountStatus: "Normal", creator: "ac", role: "1", expireTime: "2000000", clusterId: "1", invoker: "org", user: "alice",
        userId: "1", tenant: "lab", issuedAt: "1000", via: "pw")

    @Test("a token verifies until it expires (renewal takes a grace); the seed's claim names are in its payload")
    func roundTrip() throws {
        let t = tokens.sign(claims)
        #expect(t.hasPrefix("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."))
        #expect(try tokens.verify(t, nowMillis: 1_999_999) == claims)
        #expect(throws: SCNetTokens.Failure.expired) { try tokens.verify(t, nowMillis: 2_000_000) }
        #expect(try tokens.verify(t, nowMillis: 2_000_100, graceMillis: 1000) == claims)
        let payload = try #require(SCNetTokens.unbase64url(t.split(separator: ".")[1]))
        let object = try #require(try JSONSerialization.jsonObject(with: payload) as? [String: Any])
        for key in ["computeUser", "accountStatus", "creator", "role", "expireTime", "clusterId", "invoker", "user", "userId"] {
            #expect(object[key] is String, "\(key)")
        }
    }

    @Test("forged, re-signed, alg none and garbage tokens are refused")
    func forgeries() throws {
        let t = tokens.sign(claims)
        let parts = t.split(separator: ".").map(String.init)
        var forged = claims
        forged.tenant = "other"
        let forgedPayload = SCNetTokens.base64url(try JSONEncoder().encode(forged))
        #expect(throws: SCNetTokens.Failure.badSignature) { try tokens.verify(parts[0] + "." + forgedPayload + "." + parts[2], nowMillis: 0) }
        let other = SCNetTokens(keyBytes: Data(repeating: 8, count: 32)).sign(claims)
        #expect(throws: SCNetTokens.Failure.badSignature) { try tokens.verify(other, nowMillis: 0) }
        let none = SCNetTokens.base64url(Data(#"{"alg":"none","typ":"JWT"}"#.utf8)) + "." + parts[1] + "."
        #expect(throws: SCNetTokens.Failure.malformed) { try tokens.verify(none, nowMillis: 0) }
        // The same signature bytes written another way (a spare bit of the last character set) is not this token.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var signature = Array(parts[2])
        signature[signature.count - 1] = alphabet[alphabet.firstIndex(of: signature.last!)! ^ 1]
        #expect(SCNetTokens.unbase64url(Substring(String(signature))) == SCNetTokens.unbase64url(Substring(parts[2])), "the bytes are the same")
        #expect(throws: SCNetTokens.Failure.malformed) { try tokens.verify(parts[0] + "." + parts[1] + "." + String(signature), nowMillis: 0) }
        for junk in ["", "a.b", "a.b.c", "...", String(repeating: "A", count: 5000), parts[0] + "." + parts[1] + ".!!"] {
            #expect(throws: (any Error).self) { try tokens.verify(junk, nowMillis: 0) }
        }
        // The seed's own sample token is not this server's.
        let seed = try String(contentsOf: scnetFixtures.appendingPathComponent("seed_sample.py"), encoding: .utf8)
        let sample = String(seed.split(separator: "'").first { $0.hasPrefix("eyJ") } ?? "")
        #expect(!sample.isEmpty)
        #expect(throws: SCNetTokens.Failure.badSignature) { try tokens.verify(sample, nowMillis: 0) }
    }

    @Test("the AK/SK signature is hex HMAC-SHA256 over the compact JSON, in the documented key order")
    func accessKeySignature() {
        // python3: hmac.new(b'secret', json.dumps({'accessKey':'AK1','timestamp':'1700000000','user':'alice'}, separators=(',',':')).encode(), sha256)
        #expect(
            SCNetTokens.akSignature(secret: "secret", accessKey: "AK1", timestamp: "1700000000", user: "alice")
                == "7b264cf320af807bf098d0b995c182e95f47e271af6e12e86c602b56609d3dd0")
    }
}

@Suite("SCNet tokens stand on the very password they were signed in with")
struct SCNetPasswordGenerationTests {
    @Test("a sign-in that raced a password change is revoked by it; a token of the current password stands")
    func generations() async throws {
        let store = try SQLiteStore(path: try makeTempDir("canopy-scnet-gen") + "/canopy.sqlite")
        let passwords = PasswordService(store: store)
        let keys = try AccessKeyService(store: store, keyFile: try makeTempDir("canopy-scnet-keys") + "/secret.key")
        _ = try await passwords.create(user: "dave", tenant: "lab", role: .user, password: "old-password-1")
        // The sign-in checked the old password...
        let before = try await passwords.verify(user: "dave", tenant: "lab", password: "old-password-1", client: "a")
        // ...the password changed before its token was issued, later than the change.
        _ = try await passwords.setPassword(user: "dave", tenant: "lab", password: "new-password-2")
        func claims(_ via: String) -> SCNetClaims {
            SCNetClaims(
                computeUser: "dave", accountStatus: "Normal", creator: "ac", role: "1", expireTime: "9999999999999", clusterId: "1", invoker: "o",
                user: "dave", userId: "1", tenant: "lab", issuedAt: String(Int64(Date().timeIntervalSince1970 * 1000) + 60_000), via: via)
        }
        #expect(SCNetAPI.principal(of: claims("pw:" + PasswordService.generation(before)), passwords: passwords, keys: keys) == nil)
        let now = try await passwords.verify(user: "dave", tenant: "lab", password: "new-password-2", client: "a")
        #expect(SCNetAPI.principal(of: claims("pw:" + PasswordService.generation(now)), passwords: passwords, keys: keys)?.user == "dave")
        #expect(SCNetAPI.principal(of: claims("pw"), passwords: passwords, keys: keys) == nil, "the old form names no password")
    }
}
