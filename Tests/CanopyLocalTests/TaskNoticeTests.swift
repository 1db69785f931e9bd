import CanopyCore
import CanopyHost
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The notices the server writes into a task's working directory (the lease file), where the task may have planted
/// links: nothing is ever written through one.
@Suite("task notices in a stranger's directory")
struct TaskNoticeTests {
    @Test("a link planted as .canopy or as the file itself is replaced, its target untouched; the log line is appended")
    func plantedLinks() throws {
        let root = try makeTempDir("canopy-notice")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let layout = TaskLayout(root: root, workloadID: "w", index: 0)
        try FileManager.default.createDirectory(atPath: layout.work, withIntermediateDirectories: true)
        try "".write(toFile: layout.stdout, atomically: true, encoding: .utf8)
        let outside = try makeTempDir("canopy-notice-target")
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createSymbolicLink(atPath: layout.work + "/.canopy", withDestinationPath: outside)

        layout.post(TaskNotice(name: "lease", contents: "expires=soon\n", logLine: "canopy: the lease ends soon"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty, "nothing written through the planted link")
        var st = stat()
        #expect(lstat(layout.work + "/.canopy", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
        #expect((try? String(contentsOfFile: layout.work + "/.canopy/lease", encoding: .utf8)) == "expires=soon\n")
        #expect((try? String(contentsOfFile: layout.stdout, encoding: .utf8)) == "canopy: the lease ends soon\n")

        // The file itself swapped for a link to a file outside: renamed over, the target unchanged.
        let victim = outside + "/victim"
        try "precious".write(toFile: victim, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: layout.work + "/.canopy/lease")
        try FileManager.default.createSymbolicLink(atPath: layout.work + "/.canopy/lease", withDestinationPath: victim)
        layout.post(TaskNotice(name: "lease", contents: "expires=later\n"))
        #expect((try? String(contentsOfFile: victim, encoding: .utf8)) == "precious")
        #expect(lstat(layout.work + "/.canopy/lease", &st) == 0 && st.st_mode & S_IFMT == S_IFREG)
        #expect((try? String(contentsOfFile: layout.work + "/.canopy/lease", encoding: .utf8)) == "expires=later\n")

        // Names that could leave the directory are not written at all.
        layout.post(TaskNotice(name: "../escape", contents: "x"))
        layout.post(TaskNotice(name: "..", contents: "x"))
        #expect(!FileManager.default.fileExists(atPath: layout.work + "/escape"))
    }
}
