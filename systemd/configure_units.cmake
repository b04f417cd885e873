# Run by `cmake --install` (CMakeLists.txt): writes the units with the paths of this
# installation. Given: LIVEFS_UNIT_SOURCE_DIR, LIVEFS_UNIT_BINARY_DIR, LIVEFS_SBINDIR (relative
# to the prefix), LIVEFS_LIVEFSD (the built daemon); CMAKE_INSTALL_PREFIX is the prefix of this
# installation, which may differ from the configured one.
#
# LIVEFS_DAEMON, the daemon as the units start it: from /run/livefs/real-usr, the bind of
# the real /usr the units take at their first start (livefs-usr.service says why), through
# the dynamic loader there, with the loader's directory as the library path (the daemon's
# interpreter path, e.g. /lib64/ld-linux-x86-64.so.2, leads through /usr). Where the loader
# is not under /usr (a machine without merged /usr), the installed client, as before.
set(LIVEFS_SBIN "${CMAKE_INSTALL_PREFIX}/${LIVEFS_SBINDIR}")
set(LIVEFS_DAEMON "${LIVEFS_SBIN}/livefs")
execute_process(COMMAND readelf -p .interp "${LIVEFS_LIVEFSD}" OUTPUT_VARIABLE interp
                ERROR_QUIET)
string(REGEX MATCH "/[^ \t\r\n]+" interp "${interp}")
if(interp AND EXISTS "${interp}")
  file(REAL_PATH "${interp}" loader)
  if(loader MATCHES "^/usr/")
    string(REGEX REPLACE "^/usr/" "/run/livefs/real-usr/" loader "${loader}")
    get_filename_component(libdir "${loader}" DIRECTORY)
    set(daemon "${CMAKE_INSTALL_PREFIX}/libexec/livefs/livefsd")
    string(REGEX REPLACE "^/usr/" "/run/livefs/real-usr/" daemon "${daemon}")
    set(LIVEFS_DAEMON "${loader} --library-path ${libdir} ${daemon}")
  endif()
endif()
foreach(unit livefs-usr.service livefs@.service)
  configure_file("${LIVEFS_UNIT_SOURCE_DIR}/${unit}" "${LIVEFS_UNIT_BINARY_DIR}/${unit}" @ONLY)
endforeach()
