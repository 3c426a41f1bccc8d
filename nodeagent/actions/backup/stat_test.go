package backup

import (
	"os"
	"syscall"
)

type ids struct{ uid, gid uint32 }

func statOf(fi os.FileInfo) ids {
	st := fi.Sys().(*syscall.Stat_t)
	return ids{st.Uid, st.Gid}
}
