# Installs the build into a scratch prefix and runs the seed conformance kit against it.
set(prefix ${BUILD_DIR}/conformance-prefix)
file(REMOVE_RECURSE ${prefix})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix}
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed")
endif()
string(REPLACE ";" " " names "${NAMES}")
separate_arguments(name_list UNIX_COMMAND "${names}")
execute_process(COMMAND bash ${KIT}/run ${prefix} ${name_list} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "conformance kit failed")
endif()
