import ArgumentParser
import CanopyCore
import CanopyHTTP
import Foundation
import Testing

@testable import CanopyCLI

@Suite("the CLI's image and mount options, without a server")
struct CLIImageTests {
    @Test(
        "--mount SOURCE:TARGET[:ro]: the source's own colon is kept, the target follows the last :/",
        arguments: [
            ("data:/datasets/mnist:/data:ro", "data:/datasets/mnist", "/data", true),
            ("data:/datasets/mnist:/data", "data:/datasets/mnist", "/data", false),
            ("host:/scratch:/scratch:rw", "host:/scratch", "/scratch", false),
            ("data:/:/in", "data:/", "/in", false),
            ("data:/a:b:/c", "data:/a:b", "/c", false),
            ("data:/x:/ro", "data:/x", "/ro", false),
        ])
    func mounts(value: String, source: String, target: String, readOnly: Bool) throws {
        let m = try RunArguments.mount(value)
        #expect(m.source == source && m.target == target && (m.readOnly ?? false) == readOnly)
    }

    @Test("a --mount without a source scheme or a target is a usage error", arguments: ["data:/x", "/a:/b", "data:/x:data", ":/x", "x", "data:/x:ro"])
    func badMounts(value: String) {
        #expect(throws: ValidationError.self) { try RunArguments.mount(value) }
    }

    @Test("canopy run --image and --mount reach the request; the command still starts after them")
    func runBody() throws {
        let command = try CanopyCommand.parseAsRoot(
            RunArguments.normalizeCommandLine(["run", "--image", "busybox:1.36", "--mount", "data:/d:/data:ro", "--mount", "host:/s:/s", "ls", "/data"]))
        let run = try #require(command as? RunCommand)
        let body = try run.workloadRequest()
        #expect(body.image == "busybox:1.36" && body.command == ["ls", "/data"])
        #expect(body.mounts == [MountRequest(source: "data:/d", target: "/data", readOnly: true), MountRequest(source: "host:/s", target: "/s")])
        #expect(body.spec.mounts == [Mount(source: "data:/d", target: "/data", readOnly: true), Mount(source: "host:/s", target: "/s")])
    }

    @Test("images subcommands parse; names become one URL segment")
    func images() throws {
        #expect(try CanopyCommand.parseAsRoot(["images"]) is ImagesCommand.List)
        let imp = try #require(try CanopyCommand.parseAsRoot(["images", "import", "rootfs.tar", "--name", "team/app:v1", "--public"]) as? ImagesCommand.Import)
        #expect(imp.file == "rootfs.tar" && imp.name == "team/app:v1" && imp.public)
        #expect(try CanopyCommand.parseAsRoot(["images", "pull", "busybox:1.36", "-o", "json"]) is ImagesCommand.Pull)
        #expect(try CanopyCommand.parseAsRoot(["images", "rm", "a:1", "--tenant", "acme"]) is ImagesCommand.Remove)
        #expect(throws: (any Error).self) { try CanopyCommand.parseAsRoot(["images", "show", "a:1", "--public", "--tenant", "acme"]) }
        #expect(ImagesCommand.segment("team/app:v1") == "team%2Fapp%3Av1")
        let q = try #require(try CanopyCommand.parseAsRoot(["queues", "create", "rooty", "--allow-root"]) as? QueuesCommand.Create)
        #expect(q.allowRoot)
    }
}
