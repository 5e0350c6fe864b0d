import sys

try:
    from edgeagent.cli import main
except KeyboardInterrupt:  # Ctrl-C while the interpreter is still importing: no traceback
    sys.exit(130)

if __name__ == "__main__":
    main()
