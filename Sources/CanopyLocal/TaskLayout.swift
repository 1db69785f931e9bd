#if canImport(Glibc)
import Glibc
#endif
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

    /// Copies inputs into the task's directory, replacing what is there; with `owner`, they and the directories
    /// above them up to `work` become that user's.
    public func stage(_ inputs: [StagedInput], workdir: String?, owner: (uid: uid_t, gid: gid_t)?) throws {
        let fm = FileManager.default
        for input in inputs {
            guard let target = resolve(path: input.path, workdir: workdir) else {
                throw StagingError("input path \"\(input.path)\" leaves the task's directory")
            }
            try? fm.removeItem(atPath: target)
            try fm.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try FileTree.copy(from: input.localSource, to: target, owner: owner)
            give((target as NSString).deletingLastPathComponent, to: owner)
        }
    }

    /// Copies a finished task's outputs out of its directory; throws naming the output that could not be copied.
    public func collect(_ outputs: [StagedOutput], workdir: String?) throws {
        for output in outputs {
            guard let source = resolve(path: output.path, workdir: workdir) else {
                throw StagingError("output \"\(output.path)\" leaves the task's directory")
            }
            guard LocalDataStore.entry(at: source, path: output.path) != nil else {
                throw StagingError("output \"\(output.path)\" was not written by the task (nothing at that path in its working directory)")
            }
            try FileTree.replace(output.localDestination, with: source, overwrite: output.overwrite, display: output.destination)
        }
    }

    /// When tasks run as another user: `path` and each directory above it, up to the task's `work`, become theirs.
    public func give(_ path: String, to owner: (uid: uid_t, gid: gid_t)?) {
        guard let owner else { return }
        var path = path
        while path.count >= work.count {
            chown(path, owner.uid, owner.gid)
            path = (path as NSString).deletingLastPathComponent
        }
    }

    /// Reads the exit file: the exit code (128+N for signal N), or nil if there is none.
    public func readExit() -> Int? {
        guard let text = try? String(contentsOfFile: exitFile, encoding: .utf8) else { return nil }
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count >= 2, let n = Int(fields[1]) else { return nil }
        return fields[0] == "signal" ? 128 + n : n
    }
}
