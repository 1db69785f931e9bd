#if canImport(Glibc)
import Glibc
#endif
import CCanopySys
import CanopyCore
import Foundation

/// Where one task's files live under the data directory:
/// `workloads/<id>/task-<n>/{stdout.log, stderr.log, exit, pid, work/}`.
public struct TaskLayout: Sendable {
    /// The task's directory.
    public let directory: String

    /// The layout of task `index` of workload `workloadID` under `root` (the data directory's `workloads`).
    public init(root: String, workloadID: String, index: Int) {
        directory = "\(root)/\(workloadID)/task-\(index)"
    }

    /// Standard output log.
    public var stdout: String { "\(directory)/stdout.log" }
    /// Standard error log.
    public var stderr: String { "\(directory)/stderr.log" }
    /// Written by the shim when the command ends: `exit N` or `signal N`.
    public var exitFile: String { "\(directory)/exit" }
    /// `PID STARTTIME` of the shim, written at launch, read when re-adopting after a restart.
    public var pidFile: String { "\(directory)/pid" }
    /// The task's own working directory; the spec's workdir resolves inside it.
    public var work: String { "\(directory)/work" }
    /// The task's /tmp (and /var/tmp), private to it, when the server can give it a mount namespace.
    public var tmp: String { "\(directory)/tmp" }

    /// Writes a notice into `work/.canopy/NAME` and appends its log line to `stdout.log`. `work` belongs to the
    /// task, which may have put links anywhere in it: `.canopy` is opened without following links (a link or file
    /// there is replaced by a directory of the server's), and the file is written beside and renamed over, never
    /// opened through a name the task controls. Does nothing when `work` is not there.
    public func post(_ notice: TaskNotice) {
        guard !notice.name.isEmpty, notice.name.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || "-_.".utf8.contains($0) }),
            notice.name != ".", notice.name != ".."
        else { return }
        if let line = notice.logLine {
            let fd = openBeneath("stdout.log", O_WRONLY | O_APPEND)
            if fd >= 0 {
                _ = Array((line + "\n").utf8).withUnsafeBytes { FileTree.writeAll(fd, $0) }
                close(fd)
            }
        }
        guard let workDir = try? openWork() else { return }
        var dir = openat(workDir.fd, ".canopy", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if dir < 0 {
            // Missing, or the task put a link or a file there: the server's own directory takes its place.
            if unlinkat(workDir.fd, ".canopy", 0) != 0 && errno != ENOENT { FileTree.remove(".canopy", in: workDir) }
            guard mkdirat(workDir.fd, ".canopy", 0o755) == 0 || errno == EEXIST else { return }
            dir = openat(workDir.fd, ".canopy", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard dir >= 0 else { return }
        }
        try? FileTree.writeFile(notice.contents, named: notice.name, in: FileTree.Descriptor(dir), mode: 0o644)
    }

    /// Opens `relative` (a path inside the task's directory) beneath the workload's directory, following no link in
    /// any component: where jobs run as the tenant's account (Slurm), the task's directory and everything in it are
    /// theirs, and any entry may have become a link. -1 with errno on failure.
    func openBeneath(_ relative: String, _ flags: Int32) -> Int32 {
        let workload = (directory as NSString).deletingLastPathComponent
        guard let dir = try? FileTree.openDirectory(workload) else { return -1 }
        return canopy_open_beneath(dir.fd, (directory as NSString).lastPathComponent + "/" + relative, flags, 0)
    }

    /// The task's `work`, opened as `openBeneath` does.
    func openWork() throws -> FileTree.Descriptor {
        let fd = openBeneath("work", O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw FileTree.error("cannot open \(work) (or it goes through a link)") }
        return FileTree.Descriptor(fd)
    }

    /// Resolves a requested working directory inside `work`, absolute or relative; nil if it would escape.
    public func resolve(workdir: String?) -> String? {
        guard let workdir, !workdir.isEmpty else { return work }
        guard let parts = TaskPath.segments(workdir) else { return nil }
        return parts.isEmpty ? work : work + "/" + parts.joined(separator: "/")
    }

    /// Resolves a staging path: relative to the resolved working directory, or, when absolute, to the task's
    /// own directory (as a container would see `/`); nil if it would escape or names the directory itself.
    public func resolve(path: String, workdir: String?) -> String? {
        guard let wd = resolve(workdir: workdir) else { return nil }
        let base = path.hasPrefix("/") ? work : wd
        let relative = String(base.dropFirst(work.count)) + "/" + path
        guard let resolved = resolve(workdir: path.hasPrefix("/") ? path : relative), resolved != work else { return nil }
        return resolved
    }

    /// The path of `absolute` (a result of `resolve`) below `work`, as components.
    func components(below absolute: String) -> [String] {
        guard absolute.count > work.count else { return [] }
        return absolute.dropFirst(work.count + 1).split(separator: "/").map(String.init)
    }

    /// Creates the task's directories for a launch: the workload's and the task's own directory (the server's,
    /// traversable so the task can reach `work` by its full path, not listable), and `work`, private to `owner`.
    public func prepare(owner: (uid: uid_t, gid: gid_t)?) throws {
        let fm = FileManager.default
        let workload = (directory as NSString).deletingLastPathComponent
        for dir in [workload, directory] {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            chmod(dir, 0o711)
        }
        if mkdir(work, 0o700) != 0 && errno != EEXIST { throw FileTree.error("cannot create \(work)") }
        var st = stat()
        guard lstat(work, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { throw StagingError("\(work) is not a directory") }
        // A restart: an earlier attempt ran as another uid, and its files are this one's now.
        if let owner, st.st_uid != owner.uid, st.st_uid != geteuid(), let dir = try? openWork() {
            FileTree.give(dir, from: st.st_uid, to: owner)
        }
        if let owner { lchown(work, owner.uid, owner.gid) }
        chmod(work, 0o700)
        if owner != nil {
            // A fresh /tmp for each run: what an earlier run left there is gone.
            if let dir = try? FileTree.openDirectory(directory) { FileTree.remove("tmp", in: dir) }
            guard mkdir(tmp, 0o700) == 0 else { throw FileTree.error("cannot create \(tmp)") }
            if let owner { lchown(tmp, owner.uid, owner.gid) }
        }
    }

    /// Creates the directories from `work` down to `path` (a result of `resolve`), owned by `owner`, without
    /// following links.
    public func makeDirectories(_ path: String, owner: (uid: uid_t, gid: gid_t)?) throws {
        let base = try openWork()
        _ = try FileTree.makeDirectories(beneath: base, components(below: path), owner: owner, display: path)
    }

    /// Closes the task's directory to everyone but the server once the task has ended, so that a later task
    /// given the same uid cannot open what this one left in `work`.
    public func seal() {
        chmod(directory, 0o700)
    }

    /// The uid that owns `work` (the task's), when it is not the server's own.
    public func workOwner() -> uid_t? {
        var st = stat()
        guard lstat(work, &st) == 0, st.st_uid != geteuid() else { return nil }
        return st.st_uid
    }

    /// Copies inputs into the task's directory, replacing what is there; with `owner`, they and the directories
    /// above them up to `work` become that user's. Nothing in `work`, nor in the source's path, is followed if it
    /// is a link.
    public func stage(_ inputs: [StagedInput], workdir: String?, owner: (uid: uid_t, gid: gid_t)?) throws {
        guard !inputs.isEmpty else { return }
        try stage(inputs, workdir: workdir, owner: owner, base: try openWork())
    }

    /// `stage` into `work` open as `base`.
    func stage(_ inputs: [StagedInput], workdir: String?, owner: (uid: uid_t, gid: gid_t)?, base: FileTree.Descriptor) throws {
        guard !inputs.isEmpty else { return }
        for input in inputs {
            guard let target = resolve(path: input.path, workdir: workdir) else {
                throw StagingError("input path \"\(input.path)\" leaves the task's directory")
            }
            var parts = components(below: target)
            guard let name = parts.popLast() else { throw StagingError("input path \"\(input.path)\" names the working directory itself") }
            let parent = try FileTree.makeDirectories(beneath: base, parts, owner: owner, display: input.path)
            FileTree.remove(name, in: parent)
            // The source is a data-store path: a task with a read-write mount may have left links in it, so no
            // component is followed, and the copy below skips links, FIFOs and devices.
            let source = try FileTree.openDirectoryWithoutLinks(
                (input.localSource as NSString).deletingLastPathComponent, display: "input \"\(input.path)\"")
            try FileTree.copy(
                (input.localSource as NSString).lastPathComponent, in: source, to: name, in: parent, owner: owner, display: input.path)
        }
    }

    /// Copies a finished task's outputs out of its directory; throws naming the output that could not be copied.
    /// Every component of an output's path is opened without following links, and with `readableBy` (the task's
    /// uid) only files that user owns are taken.
    public func collect(_ outputs: [StagedOutput], workdir: String?, readableBy: uid_t? = nil) throws {
        guard !outputs.isEmpty else { return }
        let base = try openWork()
        for output in outputs {
            guard let source = resolve(path: output.path, workdir: workdir) else {
                throw StagingError("output \"\(output.path)\" leaves the task's directory")
            }
            var parts = components(below: source)
            guard let name = parts.popLast() else { throw StagingError("output \"\(output.path)\" names the working directory itself") }
            let missing = StagingError("output \"\(output.path)\" was not written by the task (nothing at that path in its working directory)")
            guard let parent = try FileTree.openDirectoryIfPresent(beneath: base, parts, display: "output \"\(output.path)\"") else { throw missing }
            guard let st = FileTree.lstatAt(parent, name) else { throw missing }
            guard FileTree.isDirectory(st) || FileTree.isRegular(st) else {
                throw StagingError("output \"\(output.path)\" is not a regular file or a directory (a symbolic link, FIFO or device); refusing it")
            }
            try FileTree.replace(
                output.localDestination, with: name, in: parent, readableBy: readableBy, overwrite: output.overwrite, display: output.destination)
        }
    }

    /// A small file of the task's directory that the task itself may have written (its exit status, node, ports):
    /// opened beneath the workload's directory without following a link in any component, only when it is a
    /// regular file, without blocking (a FIFO), and at most `limit` bytes of it; nil otherwise.
    public func readSmall(_ name: String, limit: Int = 4096) -> String? {
        FileTree.readSmall(openBeneath(name, O_RDONLY | O_NONBLOCK | O_NOCTTY), limit: limit)
    }

    /// Makes, or for a restart takes up again, the task's directory for a job that runs as `owner` (the job's
    /// account, which owns it and everything in it since the last start): `task-N` and `work` private to `owner`,
    /// the working directory below it, the last start's exit status, node and ports gone, inputs staged. All of it
    /// beneath the workload directory's descriptor `workload`, never following a link: the account's other jobs
    /// may have put links in place of any entry.
    package func prepareForJob(in workload: FileTree.Descriptor, workdir: String?, inputs: [StagedInput], owner: FileTree.Owner?) throws {
        let name = (directory as NSString).lastPathComponent
        if mkdirat(workload.fd, name, 0o700) != 0 && errno != EEXIST { throw FileTree.error("cannot create \(directory)") }
        let task = try FileTree.openDirectory(beneath: workload, [name], display: "task directory \(name)")
        for stale in ["exit", "node", "ports"] { unlinkat(task.fd, stale, 0) }
        guard let wd = resolve(workdir: workdir) else { throw StagingError("workdir \"\(workdir ?? "")\" leaves the task's directory") }
        let workDir = try FileTree.makeDirectories(beneath: task, ["work"], owner: owner, display: "\(name)/work")
        _ = try FileTree.makeDirectories(beneath: workDir, components(below: wd), owner: owner, display: "workdir \(workdir ?? "")")
        if let owner {
            fchown(task.fd, owner.uid, owner.gid)
            fchown(workDir.fd, owner.uid, owner.gid)
        }
        fchmod(task.fd, 0o700)
        fchmod(workDir.fd, 0o700)
        try stage(inputs, workdir: workdir, owner: owner, base: workDir)
    }

    /// When tasks run as another user: `path` and each directory above it, up to the task's `work`, become theirs.
    /// Used only on directories the server has just created.
    public func give(_ path: String, to owner: (uid: uid_t, gid: gid_t)?) {
        guard let owner else { return }
        var path = path
        while path.count >= work.count {
            lchown(path, owner.uid, owner.gid)
            path = (path as NSString).deletingLastPathComponent
        }
    }

    /// Reads the exit file: the exit code (128+N for signal N), or nil if there is none.
    public func readExit() -> Int? {
        guard let text = readSmall("exit") else { return nil }
        // The task may have written it (Slurm): only a status an exit or a signal can have is believed.
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count >= 2, let n = Int(fields[1]) else { return nil }
        if fields[0] == "signal" { return (1...127).contains(n) ? 128 + n : nil }
        return (0...255).contains(n) ? n : nil
    }
}

/// A workload's directory under a workloads root, as a whole.
public enum WorkloadDirectory {
    /// A small regular file the workload's job may have written in its directory (`job.id`, `batch.exit`): not
    /// followed if it is a link, not blocked on if it is a FIFO, at most `limit` bytes; nil otherwise.
    public static func readSmall(root: String, workloadID: String, name: String, limit: Int = 4096) -> String? {
        guard let dir = try? FileTree.openDirectory(root + "/" + workloadID) else { return nil }
        return FileTree.readSmall(openat(dir.fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), limit: limit)
    }

    /// Deletes `root/ID` without following any link in it (tasks may have left links to anywhere); missing is fine.
    public static func remove(root: String, workloadID: String) throws {
        guard Base62.isValid(workloadID) else { throw CanopyError.invalid("id", "not a workload id") }
        guard FileManager.default.fileExists(atPath: root) else { return }
        let dir = try FileTree.openDirectory(root)
        guard let st = FileTree.lstatAt(dir, workloadID) else { return }
        guard FileTree.isDirectory(st) else { throw CanopyError(.internal, "\(root)/\(workloadID) is not a directory") }
        FileTree.remove(workloadID, in: dir)
        if FileTree.lstatAt(dir, workloadID) != nil {
            throw CanopyError(.conflict, "the files of workload \(workloadID) are nested deeper than \(FileTree.maxDepth) levels; some are left in \(root)/\(workloadID)")
        }
    }
}
