import CanopyCore
import Foundation
import Testing

@Suite("image references, catalog names and engine references")
struct ImageReferenceTests {
    static let digest = "sha256:" + String(repeating: "ab", count: 32)

    @Test(
        "valid references parse into their parts",
        arguments: [
            ("busybox", nil, "busybox", nil, nil),
            ("busybox:1.36", nil, "busybox", "1.36", nil),
            ("tensorflow:r2.3.1-py3", nil, "tensorflow", "r2.3.1-py3", nil),
            ("library/busybox:latest", nil, "library/busybox", "latest", nil),
            ("ghcr.io/org/app:v2", "ghcr.io", "org/app", "v2", nil),
            ("localhost:5000/team/app", "localhost:5000", "team/app", nil, nil),
            ("localhost/app:1", "localhost", "app", "1", nil),
            ("registry.example.com:443/a/b/c:_x", "registry.example.com:443", "a/b/c", "_x", nil),
            ("my-reg.io/a__b/c--d/e.f_g:1", "my-reg.io", "a__b/c--d/e.f_g", "1", nil),
            ("busybox@\(digest)", nil, "busybox", nil, digest),
            ("busybox:1.36@\(digest)", nil, "busybox", "1.36", digest),
            ("localhost:5000", nil, "localhost", "5000", nil),
        ] as [(String, String?, String, String?, String?)])
    func valid(text: String, domain: String?, path: String, tag: String?, digest: String?) throws {
        let r = try ImageReference.parse(text)
        #expect(r.domain == domain && r.path == path && r.tag == tag && r.digest == digest)
        #expect(r.description == text)
    }

    @Test(
        "invalid references are refused naming the field and saying why",
        arguments: [
            ("", "empty"), ("Busybox", "uppercase"), ("busybox:Latest", "uppercase"), ("busy box", "white space"), ("busybox\n", "white space"),
            ("busy\u{7}box", "control"), ("a/../b", "\"..\""), ("a..b:1", "\"..\""), ("busybox:", "tag"), (":1", "empty name"), ("/busybox", "empty name"),
            ("a//b", "empty name"), ("busybox/", "empty name"), ("-busybox", "name component"), ("busybox-", "name component"), ("a___b", "name component"),
            ("a_.b", "name component"), ("busybox:-x", "tag"), ("busybox:.x", "tag"), ("busybox:\(String(repeating: "x", count: 129))", "tag"),
            ("busybox@sha256:abc", "digest"), ("busybox@md5:\(String(repeating: "a", count: 32))", "digest"), ("bad_host.io:99999/app", "registry"),
            ("-bad.io/app", "registry"), (String(repeating: "a", count: 256), "longer than 255"), ("busyböx", "ASCII"), ("a:b:c", "name component"),
        ])
    func invalid(text: String, why: String) {
        #expect(throws: CanopyError.self) { try ImageReference.parse(text, field: "spec.image") }
        do {
            _ = try ImageReference.parse(text, field: "spec.image")
        } catch {
            #expect(error.field == "spec.image")
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains(why), "\(text): \(error.message)")
        }
    }

    @Test("catalog names: no registry, no digest, the tag filled in")
    func catalogNames() throws {
        #expect(try ImageReference.parseCatalogName("busybox", field: "name").catalogName == "busybox:latest")
        #expect(try ImageReference.parseCatalogName("team/app:v1", field: "name").catalogName == "team/app:v1")
        #expect(throws: CanopyError.self) { try ImageReference.parseCatalogName("ghcr.io/org/app:v2", field: "name") }
        #expect(throws: CanopyError.self) { try ImageReference.parseCatalogName("app@\(Self.digest)", field: "name") }
        // A pull's default name drops the registry, and Docker Hub's library/.
        #expect(try ImageReference.parse("ghcr.io/org/app:v2").defaultCatalogName == "org/app:v2")
        #expect(try ImageReference.parse("docker.io/library/busybox").defaultCatalogName == "busybox:latest")
        #expect(try ImageReference.parse("busybox:1.36@\(Self.digest)").defaultCatalogName == "busybox:1.36")
        #expect(try ImageReference.parse("busybox@\(Self.digest)").defaultCatalogName == nil)
    }

    @Test("engine references: one namespace per scope, valid references, and tenants that are not components are encoded")
    func engineReferences() throws {
        let name = try ImageReference.parseCatalogName("team/app:v1", field: "name")
        #expect(ImageRecord.engineReference(for: name, tenant: nil) == "canopy/public/team/app:v1")
        #expect(ImageRecord.engineReference(for: name, tenant: "acme") == "canopy/t-acme/team/app:v1")
        // `_x` and `a-_b` cannot follow `t-`; they are written in hex, which `t-` names never start with.
        #expect(ImageRecord.scopeComponent("_x") == "x-5f78")
        #expect(ImageRecord.scopeComponent("a-_b") == "x-612d5f62")
        #expect(ImageRecord.scopeComponent("public") == "t-public")
        for tenant in ["acme", "_x", "a-_b", "a__b", "x-5f78", "0", String(repeating: "z", count: 63), "a___b", "-"] {
            let ref = ImageRecord.engineReference(for: name, tenant: tenant)
            #expect((try? ImageReference.parse(ref)) != nil, "\(tenant) -> \(ref)")
        }
        let scopes = ["acme", "_x", "a-_b", "x-5f78", "t-acme", "5f78"].map(ImageRecord.scopeComponent) + [ImageRecord.scopeComponent(nil)]
        #expect(Set(scopes).count == scopes.count)
        #expect(ImageRecord.recordID(name: "a:1", tenant: nil) != ImageRecord.recordID(name: "a:1", tenant: "public"))
    }
}

@Suite("mount rules")
struct MountRulesTests {
    @Test(
        "sources: data:/PATH and host:/PATH, normalized; anything else refused",
        arguments: [
            ("data:/datasets/mnist", "data:/datasets/mnist"), ("data://a/./b/", "data:/a/b"), ("host:/scratch", "host:/scratch"), ("data:/", "data:/"),
            ("data:datasets", nil), ("data:/a/../b", nil), ("nfs:/x", nil), ("/datasets", nil), ("data:/a\u{0}b", nil), ("host:", nil),
        ] as [(String, String?)])
    func sources(raw: String, expected: String?) {
        switch MountRules.source(raw) {
        case .success(let s): #expect(s.description == expected, "\(raw)")
        case .failure(let p): #expect(expected == nil, "\(raw): \(p.message)")
        }
    }

    @Test(
        "targets: absolute, normalized, not /, /workspace itself or a system directory",
        arguments: [
            ("/data", "/data"), ("/data//x/", "/data/x"), ("/workspace/data", "/workspace/data"), ("/var/lib/x", "/var/lib/x"), ("/librarian", nil),
            ("/", nil), ("//", nil), ("/workspace", nil), ("/workspace/", nil), ("data", nil), ("/a/../etc", nil), ("/proc", nil), ("/proc/1", nil),
            ("/sys/fs", nil),
            ("/dev", nil), ("/etc/passwd", nil), ("/bin", nil), ("/sbin", nil), ("/lib", nil), ("/lib64", nil), ("/usr/local", nil), ("/boot", nil),
            ("/run", nil), ("/var/run", nil), ("/var/run/docker.sock", nil), ("/etcetera", "/etcetera"), ("/runs", "/runs"),
        ] as [(String, String?)])
    func targets(raw: String, expected: String?) {
        switch MountRules.target(raw) {
        case .success(let t): #expect(t == expected, "\(raw)")
        case .failure(let p): #expect(expected == nil, "\(raw): \(p.message)")
        }
    }

    @Test("the host allow-list compares whole components, after normalization")
    func allowList() {
        #expect(MountRules.isAllowed(host: "/scratch", by: ["/scratch"]))
        #expect(MountRules.isAllowed(host: "/scratch/a/b", by: ["/scratch/"]))
        #expect(MountRules.isAllowed(host: "/scratch/a", by: ["//scratch/./"]))
        #expect(!MountRules.isAllowed(host: "/scratch2", by: ["/scratch"]))
        #expect(!MountRules.isAllowed(host: "/scratc", by: ["/scratch"]))
        #expect(!MountRules.isAllowed(host: "/", by: ["/scratch"]))
        #expect(!MountRules.isAllowed(host: "/scratch", by: []))
        #expect(!MountRules.isAllowed(host: "/etc", by: ["/scratch/../etc", "relative"]))
    }
}

@Suite("queues stored before allowRoot")
struct QueueDecodingTests {
    @Test("a queue record without allowRoot reads as false; one with it keeps it")
    func allowRootDefault() throws {
        let old = try JSONDecoder().decode(Queue.self, from: Data(#"{"name": "q", "priority": 1, "description": "d", "pool": "p"}"#.utf8))
        #expect(old.allowRoot == false && old.pool == "p" && old.priority == 1)
        let new = try JSONDecoder().decode(Queue.self, from: JSONEncoder().encode(Queue(name: "r", allowRoot: true)))
        #expect(new.allowRoot)
    }
}
