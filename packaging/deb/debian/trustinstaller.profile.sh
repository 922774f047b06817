# /etc/profile.d/trustinstaller.sh, from the trustinstaller package: login shells (su -,
# sudo -i, ssh) get the runtime trust environment, once the agent has written it.
#
# It sources the default runtime_dir's env file only, and only when that file and every
# directory above it belong to root, are no symlinks, and no one else may write them: then no
# other user can put a word into this shell. A configured runtime_dir elsewhere is not read.
# Before an install (or after an empty manifest) there is no file, and nothing changes.
trustinstaller_env=/run/trustinstaller-env/env
if [ -f "$trustinstaller_env" ] && [ "$(find / /run /run/trustinstaller-env "$trustinstaller_env" \
        -maxdepth 0 -user 0 ! -perm /022 ! -type l -print 2>/dev/null | wc -l)" -eq 4 ]; then
    # The file holds only KEY='value' lines: export each, and leave this shell's -a as it was.
    case $- in *a*) trustinstaller_a=1 ;; *) trustinstaller_a= ;; esac
    set -a
    . "$trustinstaller_env"
    [ -n "$trustinstaller_a" ] || set +a
    unset trustinstaller_a
fi
unset trustinstaller_env
