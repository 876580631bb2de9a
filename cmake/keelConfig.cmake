include(CMakeFindDependencyMacro)
find_dependency(Threads)
# keel/http.h includes jansson.h: jansson is part of keel's interface.
find_dependency(PkgConfig)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
include("${CMAKE_CURRENT_LIST_DIR}/keelTargets.cmake")
